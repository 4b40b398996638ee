"""Serve the page and the JSON API: python -m web [--port 8080] [--address 127.0.0.1:50050].

Every flag also reads FACEDIT_<FLAG> from the environment (FACEDIT_WEB_PORT, FACEDIT_ADDRESS,
FACEDIT_TOKEN, FACEDIT_TLS_CA, ...), like the services. Logs: one JSON object per line on stderr.
facedit_client must be importable (the wheel of `make client-wheel`, or web.launch's staged copy).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time


def env(name: str, default: str) -> str:
    return os.environ.get(f"FACEDIT_{name.upper().replace('-', '_')}", default)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(time.time(), 3), "level": record.levelname.lower(), "service": "web",
                 "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logs(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler] if name == "" else []
        logger.propagate = True
    logging.getLogger().setLevel(level)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m web", description="facedit web page and HTTP/JSON API")
    p.add_argument("--host", default=env("web_host", "127.0.0.1"), help="address to listen on")
    p.add_argument("--port", type=int, default=int(env("web_port", "8080")))
    p.add_argument("--address", default=env("address", "127.0.0.1:50050"), help="the gateway (host:port)")
    p.add_argument("--token", default=env("token", ""), help="bearer token sent to the gateway")
    p.add_argument("--tls", action="store_true", default=env("tls", "0") not in ("", "0", "false"),
                   help="reach the gateway over TLS with the system's CAs")
    p.add_argument("--tls-ca", default=env("tls_ca", ""), help="PEM CA of the gateway's certificate (implies TLS)")
    p.add_argument("--tls-server-name", default=env("tls_server_name", ""))
    p.add_argument("--pack", default=env("web_pack", ""), help="the pack to edit with (empty: the gateway's default)")
    p.add_argument("--max-upload-mb", type=float, default=float(env("web_max_upload_mb", "8")),
                   help="larger uploads are refused (413) before they are read")
    p.add_argument("--timeout-s", type=float, default=float(env("web_timeout_s", "30")),
                   help="deadline of each gateway call")
    p.add_argument("--faithful-timeout-s", type=float, default=float(env("web_faithful_timeout_s", "120")),
                   help="deadline of an upload's faithful inversion (seconds per face)")
    p.add_argument("--log-level", default=env("log_level", "INFO"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    setup_logs(args.log_level.upper())
    import uvicorn
    from facedit_client import Client

    from web.app import create_app

    client = Client(args.address, token=args.token or None, tls=args.tls, tls_ca=args.tls_ca or None,
                    tls_server_name=args.tls_server_name or None, timeout_s=args.timeout_s,
                    faithful_timeout_s=args.faithful_timeout_s, pack=args.pack)
    app = create_app(client, int(args.max_upload_mb * (1 << 20)))
    logging.getLogger("web").info(json.dumps({"event": "start", "url": f"http://{args.host}:{args.port}/",
                                              "gateway": args.address}))
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=True)


if __name__ == "__main__":
    main()
