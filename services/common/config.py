"""Command-line flags with environment-variable defaults (FACEDIT_<FLAG>)."""
from __future__ import annotations

import argparse
import os

from services.common import deadlines
from services.common.admission import Limits

DEFAULT_WORKERS = 128


def env(name: str, default: str) -> str:
    return os.environ.get(f"FACEDIT_{name.upper().replace('-', '_')}", default)


def parser(service: str, default_port: int) -> argparse.ArgumentParser:
    """Flags every service has; each flag also reads FACEDIT_<FLAG> from the environment."""
    p = argparse.ArgumentParser(prog=f"python -m services.{service}.server",
                                description=f"facedit {service} service")
    p.add_argument("--host", default=env("host", "127.0.0.1"), help="address to listen on (0.0.0.0 in a pod)")
    p.add_argument("--port", type=int, default=int(env(f"{service}_port", str(default_port))))
    p.add_argument("--model-store", default=env("model_store", "model_store"), help="folder of packs")
    p.add_argument("--workers", type=int, default=int(env("workers", str(DEFAULT_WORKERS))),
                   help="RPC handler threads: calls in progress at once (a batch can only merge calls that "
                        "hold a thread, so keep it >= the concurrency to batch)")
    p.add_argument("--log-level", default=env("log_level", "INFO"))
    p.add_argument("--metrics-port", type=int, default=int(env("metrics_port", "0")),
                   help="serve Prometheus metrics at http://<host>:<port>/metrics (docs/operations.md); "
                        "0 = off: no endpoint and nothing recorded")
    p.add_argument("--default-deadline-s", type=float,
                   default=float(env("default_deadline_s", str(deadlines.DEFAULT_DEADLINE_S))),
                   help="deadline of a call whose caller set none")
    p.add_argument("--pack-retry-s", type=float, default=float(env("pack_retry_s", "5")),
                   help="while a pack's files are missing or do not match their sha256, the service runs "
                        "NOT_SERVING and tries them again this often")
    p.add_argument("--otlp-endpoint", default=env("otlp_endpoint", ""),
                   help="send traces to this OpenTelemetry collector (OTLP/gRPC, e.g. http://collector:4317); "
                        "empty = none sent (trace ids still go to logs and answers)")
    add_security_flags(p, service)
    return p


def add_security_flags(p: argparse.ArgumentParser, service: str) -> None:
    """TLS, mTLS and caller checks (services/common/security.py, docs/security.md)."""
    g = p.add_argument_group("security (docs/security.md)")
    g.add_argument("--tls-cert", default=env("tls_cert", ""), help="PEM certificate (chain) to serve TLS with")
    g.add_argument("--tls-key", default=env("tls_key", ""), help="PEM private key of --tls-cert")
    g.add_argument("--tls-client-ca", default=env("tls_client_ca", ""),
                   help="PEM CA: callers must present a client certificate it signed (mTLS; health checks excepted)")
    g.add_argument("--peer-roles", default=env("peer_roles", "gateway=gateway;admin=admin"),
                   help="roles of client certificates by common name, name=role[+role];... (roles: internal, "
                        "gateway: stores custom directions for the clients it forwards, admin: publishes packs)")
    g.add_argument("--reflection", choices=("auth", "open", "off"), default=env("reflection", "auth"),
                   help="server reflection: for callers that pass the checks of every other RPC (auth), for "
                        "anyone (open), or not served (off)")
    g.add_argument("--insecure", action="store_true", default=env("insecure", "0") not in ("", "0", "false"),
                   help="allow plaintext or unchecked callers on an address other than loopback")
    g.add_argument("--health-port", type=int, default=int(env("health_port", "0")),
                   help="also serve grpc.health.v1 alone in plaintext on this port (probes without TLS); 0 = no")
    if service == "gateway":
        g.add_argument("--tokens-file", default=env("tokens_file", ""),
                       help="JSON file of the clients' bearer tokens and roles (a mounted secret); empty = no "
                            "tokens asked")
        g.add_argument("--internal-ca", default=env("internal_ca", ""),
                       help="PEM CA of the internal services' certificates: calls them over TLS")
        g.add_argument("--internal-cert", default=env("internal_cert", ""),
                       help="PEM client certificate presented to the internal services (mTLS)")
        g.add_argument("--internal-key", default=env("internal_key", ""), help="PEM key of --internal-cert")
        g.add_argument("--internal-server-name", default=env("internal_server_name", ""),
                       help="name to check in the internal services' certificates instead of their address's host")


def add_client_limit_flags(p: argparse.ArgumentParser) -> None:
    """Per-client admission limits (services/common/admission.py); a tokens-file entry may set its own."""
    p.add_argument("--client-rate-per-s", type=float, default=float(env("client_rate_per_s", "1000")),
                   help="calls per second one client may make on average (0 = no rate limit)")
    p.add_argument("--client-burst", type=int, default=int(env("client_burst", "1000")),
                   help="calls one client may make at once after a quiet spell")
    p.add_argument("--client-concurrency", type=int, default=int(env("client_concurrency", "64")),
                   help="calls one client may have in progress (0 = no limit)")


def client_limits(args: argparse.Namespace) -> Limits:
    """The Limits of --client-* flags; SystemExit when they make no sense."""
    try:
        return Limits(args.client_rate_per_s, args.client_burst, args.client_concurrency)
    except ValueError as err:
        raise SystemExit(f"{err} (--client-rate-per-s, --client-burst, --client-concurrency)") from None


def add_batching_flags(p: argparse.ArgumentParser) -> None:
    """Flags of a service that runs ONNX models behind a dynamic batcher."""
    p.add_argument("--max-batch", type=int, default=int(env("max_batch", "64")), help="rows per model call")
    p.add_argument("--max-delay-ms", type=float, default=float(env("max_delay_ms", "2")),
                   help="how long a batch waits for more requests under concurrency")
    p.add_argument("--batch-workers", type=int, default=int(env("batch_workers", "2")),
                   help="batches of a model running at once: a lone batch uses --threads ONNX Runtime threads, "
                        "overlapping ones share them (2 on 2 cores: one thread each, so no core idles while "
                        "the other batch's results are being sent)")
    p.add_argument("--max-queue", type=int, default=int(env("max_queue", "256")),
                   help="queued requests before RESOURCE_EXHAUSTED")
    p.add_argument("--threads", type=int, default=int(env("threads", "0")),
                   help="ONNX Runtime intra-op threads per model call (0 = one per core)")
    p.add_argument("--inter-op-threads", type=int, default=int(env("inter_op_threads", "1")),
                   help="ONNX Runtime inter-op threads (the graphs are chains: 1)")
    p.add_argument("--spinning", type=int, choices=(0, 1), default=int(env("spinning", "0")),
                   help="1: idle ONNX Runtime threads busy-wait for the next call (burns CPU other "
                        "processes need)")
    p.add_argument("--io-binding", choices=("auto", "on", "off"), default=env("io_binding", "auto"),
                   help="ONNX Runtime IO binding: auto = on the CUDA provider only")
