"""Helpers the tests share (fixtures are in conftest.py): paths, and the four servicers wired
onto real gRPC servers on 127.0.0.1 in this process.

Every server started here listens on 127.0.0.1 and is stopped by its owner.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from services.common.redis_server import connect
from services.common.server import Service, start_local

ROOT = Path(__file__).resolve().parent.parent
MODEL_STORE = ROOT / "model_store"
MINILM = ROOT / "build" / "minilm"  # the sentence encoder of text edits, built by `make setup`

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
LOGGER = logging.getLogger("test")


class Servers:
    """The four services, each wired by its own `create` (as its main() does) and started on its own
    real gRPC server on 127.0.0.1, in this process."""

    def __init__(self, store: Path, pack: str, redis_url: str, more_packs: tuple[str, ...] = ()):
        from services.directions import server as directions
        from services.encoder import server as encoder
        from services.gateway import server as gateway
        from services.generator import server as generator

        packs = ",".join((pack, *more_packs))
        common = ["--model-store", str(store), "--packs", packs]
        batching = ["--threads", "1", "--max-queue", "64"]
        self.redis_client = connect(redis_url)  # the registry's Redis, for tests that look inside it
        self.servers, self.services, self.addresses = [], [], {}
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
        service = module.create(module.parser().parse_args(argv), LOGGER)
        server, address = start_local(service, LOGGER)
        self.servers.append(server)
        self.services.append(service)
        self.addresses[service.name] = address
        return service.servicer

    def stop(self):
        for s in self.servers:
            s.stop(0).wait()
        for service in self.services:
            service.close()


@contextlib.contextmanager
def other_gateway(servers: "Servers", generator: str, redis_client, **gateway_kw):
    """A second gateway on its own loopback server, over `servers`' encoder and directions and the
    generator at `generator` (e.g. TorchServe-backed, or an address where nothing listens); yields
    (a FaceditClient of it, its GatewayServicer). gateway_kw: GatewayServicer's own options."""
    from facedit.v1 import gateway_pb2_grpc
    from services.client import FaceditClient
    from services.gateway.cache import LatentCache
    from services.gateway.server import Downstream, GatewayServicer

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
        service.close()
