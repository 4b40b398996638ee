"""Helpers the tests share (fixtures are in conftest.py): paths, and the four servicers wired
onto real gRPC servers on 127.0.0.1 in this process.

Every server started here listens on 127.0.0.1 and is stopped by its owner.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from services.common.redis_server import connect

ROOT = Path(__file__).resolve().parent.parent
MODEL_STORE = ROOT / "model_store"
MINILM = ROOT / "build" / "minilm"  # the sentence encoder of text edits, built by `make setup`

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


class Servers:
    """The four servicers, each on its own real gRPC server on 127.0.0.1 (one process)."""

    def __init__(self, store: Path, pack: str, redis_url: str, more_packs: tuple[str, ...] = ()):
        import logging

        from facedit.v1 import directions_pb2_grpc, encoder_pb2_grpc, gateway_pb2_grpc, generator_pb2_grpc
        from facedit_core.pack import load_pack
        from services.common.onnx import Threading
        from services.directions.registry import Registry
        from services.directions.server import DirectionsServicer
        from services.directions.text import SentenceEncoder
        from services.encoder.server import EncoderServicer, PackModels
        from services.gateway.cache import LatentCache
        from services.gateway.compose_memo import ComposeMemo
        from services.gateway.server import Downstream, GatewayServicer
        from services.generator.server import GeneratorServicer, OnnxGenerator

        logger = logging.getLogger("test")
        names = (pack, *more_packs)
        loaded = {n: load_pack(n, store) for n in names}
        self.redis_client = connect(redis_url)  # the registry's Redis, for tests that look inside it
        registry = Registry(self.redis_client)
        for p in loaded.values():
            registry.publish(p)
        self.servers, self.addresses = [], {}
        self.generators = {n: OnnxGenerator(p, Threading(1), 64, 0.002, 64) for n, p in loaded.items()}
        self.encoders = {n: PackModels(p, Threading(1)) for n, p in loaded.items()}
        self.generator, self.encoder_models = self.generators[pack], self.encoders[pack]
        servicers = {
            "directions": (DirectionsServicer(registry, store, pack, SentenceEncoder(MINILM)),
                           directions_pb2_grpc.add_DirectionsServicer_to_server),
            "encoder": (EncoderServicer(self.encoders, pack), encoder_pb2_grpc.add_EncoderServicer_to_server),
            "generator": (GeneratorServicer(self.generators, pack), generator_pb2_grpc.add_GeneratorServicer_to_server),
        }
        for name, (servicer, add) in servicers.items():
            self._start(name, lambda s, a=add, v=servicer: a(v, s), logger)
        gateway_redis = connect(redis_url)
        self.gateway = GatewayServicer(Downstream(self.addresses["encoder"], self.addresses["directions"],
                                                  self.addresses["generator"], hop_timeout_s=10),
                                       LatentCache(gateway_redis, ttl_s=60), pack, default_deadline_s=30,
                                       memo=ComposeMemo(gateway_redis), merge_max_batch=8)
        self._start("gateway", lambda s: gateway_pb2_grpc.add_GatewayServicer_to_server(self.gateway, s), logger)

    def _start(self, name, register, logger):
        from services.common.server import create_server

        server, _ = create_server(name, [register], [f"facedit.v1.{name.capitalize()}"], logger, max_workers=8)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self.servers.append(server)
        self.addresses[name] = f"127.0.0.1:{port}"

    def stop(self):
        for s in self.servers:
            s.stop(0).wait()
        for g in self.generators.values():
            g.batcher.close()
        for e in self.encoders.values():
            e.close()


@contextlib.contextmanager
def other_gateway(servers: "Servers", generator: str, redis_client, **gateway_kw):
    """A second gateway on its own loopback server, over `servers`' encoder and directions and the
    generator at `generator` (e.g. TorchServe-backed, or an address where nothing listens); yields
    (a FaceditClient of it, its GatewayServicer)."""
    import logging

    from facedit.v1 import gateway_pb2_grpc
    from services.client import FaceditClient
    from services.common.server import create_server
    from services.gateway.cache import LatentCache
    from services.gateway.server import Downstream, GatewayServicer

    gateway = GatewayServicer(Downstream(servers.addresses["encoder"], servers.addresses["directions"], generator,
                                         hop_timeout_s=20),
                              LatentCache(redis_client, ttl_s=60), "tiny", default_deadline_s=30, **gateway_kw)
    server, _ = create_server("gateway", [lambda s: gateway_pb2_grpc.add_GatewayServicer_to_server(gateway, s)],
                              ["facedit.v1.Gateway"], logging.getLogger("test"), max_workers=8)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client = FaceditClient(f"127.0.0.1:{port}", timeout_s=30)
    try:
        yield client, gateway
    finally:
        client.close()
        server.stop(0).wait()
        if gateway.merged is not None:
            gateway.merged.close()
