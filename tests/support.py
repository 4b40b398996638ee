"""Helpers the tests share (fixtures are in conftest.py): paths, and the four servicers wired
onto real gRPC servers on 127.0.0.1 in this process.

Every server started here listens on 127.0.0.1 and is stopped by its owner.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

import grpc

from facedit_core.errors import FaceditError
from services.common.redis_server import connect
from services.common.server import Service, start_local

ROOT = Path(__file__).resolve().parent.parent
MODEL_STORE = ROOT / "model_store"
MINILM = ROOT / "build" / "minilm"  # the sentence encoder of text edits, built by `make setup`

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
LOGGER = logging.getLogger("test")


class Servers:
    """The four services, each wired by its own `create` (as its main() does) and started on its own
    real gRPC server on 127.0.0.1, in this process. extra: more flags per service name (security
    flags: TLS files, tokens file)."""

    def __init__(self, store: Path, pack: str, redis_url: str, more_packs: tuple[str, ...] = (),
                 extra: dict[str, list[str]] | None = None):
        from services.directions import server as directions
        from services.encoder import server as encoder
        from services.gateway import server as gateway
        from services.generator import server as generator

        packs = ",".join((pack, *more_packs))
        common = ["--model-store", str(store), "--packs", packs]
        batching = ["--threads", "1", "--max-queue", "64"]
        self.redis_url = redis_url
        self.redis_client = connect(redis_url)  # the registry's Redis, for tests that look inside it
        self.servers, self.services, self.addresses = [], [], {}
        self.extra = extra or {}
        self._start(directions, [*common, "--redis-url", redis_url, "--sentence-encoder", str(MINILM)])
        self._start(encoder, [*common, *batching])
        self._start(generator, [*common, *batching])
        self.encoder_models = self.services[1].servicer.models[pack]
        self.gateway = self._start(gateway, [
            "--encoder", self.addresses["encoder"], "--directions", self.addresses["directions"],
            "--generator", self.addresses["generator"], "--redis-url", redis_url, "--default-pack", pack,
            "--hop-timeout-s", "10", "--latent-ttl-s", "60", "--merge-max-batch", "8"])

    def _start(self, module, argv: list[str]):
        """Start `module`'s service from its command-line flags; returns its servicer."""
        name = module.__name__.split(".")[-2]
        service = module.create(module.parser().parse_args([*argv, *self.extra.get(name, [])]), LOGGER)
        server, address = start_local(service, LOGGER)
        self.servers.append(server)
        self.services.append(service)
        self.addresses[service.name] = address
        return service.servicer

    def stop(self):
        for s in self.servers:
            s.stop(0).wait()
        for service in self.services:
            service.stop()


@contextlib.contextmanager
def other_gateway(servers: "Servers", generator: str, redis_client, **gateway_kw):
    """A second gateway on its own loopback server, over `servers`' encoder and directions and the
    generator at `generator` (e.g. TorchServe-backed, or an address where nothing listens); yields
    (a FaceditClient of it, its GatewayServicer). gateway_kw: GatewayServicer's own options."""
    from facedit.v1 import gateway_pb2_grpc
    from services.client import FaceditClient
    from services.gateway.cache import LatentCache
    from services.gateway.downstream import Downstream
    from services.gateway.server import GatewayServicer

    gateway = GatewayServicer(Downstream(servers.addresses["encoder"], servers.addresses["directions"], generator,
                                         hop_timeout_s=20),
                              LatentCache(redis_client, ttl_s=60), "tiny", default_deadline_s=30, **gateway_kw)
    service = Service("gateway", gateway, gateway_pb2_grpc.add_GatewayServicer_to_server, "facedit.v1.Gateway",
                      gateway.close)
    server, address = start_local(service, LOGGER)
    client = FaceditClient(address, timeout_s=30)
    try:
        yield client, gateway
    finally:
        client.close()
        server.stop(0).wait()
        service.stop()


def secured_flags(pki: Pki, tokens_path: Path | None) -> dict[str, list[str]]:
    """Servers' extra flags: TLS everywhere, mTLS to the internal services, tokens at the gateway (none
    without tokens_path)."""
    internal = {name: ["--tls-cert", str(pki.cert(name)), "--tls-key", str(pki.key(name)),
                       "--tls-client-ca", str(pki.ca)] for name in ("encoder", "directions", "generator")}
    gateway = ["--tls-cert", str(pki.cert("gateway")), "--tls-key", str(pki.key("gateway")),
               *(["--tokens-file", str(tokens_path)] if tokens_path else []), "--internal-ca", str(pki.ca),
               "--internal-cert", str(pki.cert("gateway")), "--internal-key", str(pki.key("gateway"))]
    return {**internal, "gateway": gateway}


class Pki:
    """A certificate authority of its own in `folder` (tests make theirs with the cryptography package):
    ca.pem / ca.key, and per name <name>.pem / <name>.key with common name = name, subject alternative
    names localhost, 127.0.0.1 and the name, usable as server and as client certificate."""

    def __init__(self, folder: Path, names: tuple[str, ...] = ("gateway", "encoder", "directions", "generator"),
                 ca_name: str = "facedit test CA"):
        import datetime as dt

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        self._x509, self._hashes, self._ec, self._ser = x509, hashes, ec, serialization
        self._eku = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        self._cn = NameOID.COMMON_NAME
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        now = dt.datetime.now(dt.timezone.utc)
        self._valid = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=2))
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(self._cn, ca_name)])
        self._ca_name = name
        ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
              .public_key(self._ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(self._valid[0]).not_valid_after(self._valid[1])
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .sign(self._ca_key, hashes.SHA256()))
        self._write("ca", ca, self._ca_key)
        for n in names:
            self.issue(n)

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"

    def issue(self, name: str) -> Path:
        import ipaddress

        x509 = self._x509
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(self._cn, name)])).issuer_name(self._ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self._valid[0]).not_valid_after(self._valid[1])
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"), x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                    critical=False)
                .add_extension(x509.ExtendedKeyUsage(self._eku), critical=False)
                .sign(self._ca_key, self._hashes.SHA256()))
        self._write(name, cert, key)
        return self.cert(name)

    def _write(self, name: str, cert, key) -> None:
        ser = self._ser
        self.cert(name).write_bytes(cert.public_bytes(ser.Encoding.PEM))
        self.key(name).write_bytes(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
        self.key(name).chmod(0o600)


def at_once(fn, n: int, errors=(FaceditError, grpc.RpcError), timeout_s: float = 60) -> dict:
    """fn(k) for k < n, each in its own thread, all released together -> {k: result or the error}.
    Fails when a call has not returned after timeout_s."""
    out, barrier = {}, threading.Barrier(n)

    def one(k):
        barrier.wait()
        try:
            out[k] = fn(k)
        except errors as err:
            out[k] = err
    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert not any(t.is_alive() for t in threads), f"a call has not returned after {timeout_s} s"
    return out


def metric_samples(text: str) -> dict[tuple[str, frozenset], float]:
    """A Prometheus text exposition (a service's /metrics page, or prometheus_client.generate_latest() of
    this process) -> {(sample name, frozenset of its label items): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples: dict, name: str, **labels) -> float:
    """One sample's value from metric_samples(); 0 when absent (a labelled series appears on first use)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def local_metrics() -> dict[tuple[str, frozenset], float]:
    """metric_samples() of this process's registry (the in-process servers of Servers record into it)."""
    from prometheus_client import generate_latest

    return metric_samples(generate_latest().decode())


def image_file(pixels, exif_orientation: int | None = None) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes; with exif_orientation, a JPEG (quality 95) carrying that EXIF tag."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(pixels)
    if exif_orientation is None:
        img.save(buf, format="PNG")
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def decode_image(data: bytes):
    """An image file -> (H, W, 3) uint8 RGB."""
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
