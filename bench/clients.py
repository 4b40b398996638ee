"""The gRPC load clients of `python -m bench` (one harness.Client per load thread) and the empty
RPC that measures one hop's fixed cost."""
from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np

from bench.harness import Client, percentile, timed_loop
from bench.workload import EDIT_STRENGTH
from facedit_core.pack import Pack


def channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20),
                                                   ("grpc.max_send_message_length", 64 << 20)])


def generator_client(address: str, pack: Pack) -> Callable[[int], Client]:
    """One latent per GenerateImages request; returns the batch size that served it."""
    from facedit.v1 import generator_pb2, generator_pb2_grpc
    from services.common.tensors import to_tensor

    def make(k: int) -> Client:
        ch = channel(address)
        stub = generator_pb2_grpc.GeneratorStub(ch)
        rng = np.random.default_rng(k)
        requests = [generator_pb2.GenerateImagesRequest(
            pack=pack.name, latents=to_tensor(rng.standard_normal((1, pack.latent_dim), dtype=np.float32)))
            for _ in range(16)]
        expected = [1, pack.resolution, pack.resolution, 3]

        def call(i: int) -> int:
            resp = stub.GenerateImages(requests[i % len(requests)], timeout=30)
            if list(resp.pixels.shape) != expected:
                raise RuntimeError(f"generator answered shape {list(resp.pixels.shape)}, expected {expected}")
            return resp.batch_size

        return Client(call, ch.close)

    return make


def gateway_client(address: str, pngs: list[bytes], edit: str, keep: str,
                   skip_scores: bool = False) -> Callable[[int], Client]:
    """Edit with FaceSource.image (a PNG), one edit and one kept attribute, full (scores) or lean
    (skip_scores); returns None."""
    from facedit.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

    def make(k: int) -> Client:
        ch = channel(address)
        stub = gateway_pb2_grpc.GatewayStub(ch)
        requests = [gateway_pb2.EditRequest(
            face=gateway_pb2.FaceSource(image=png),
            edits=[common_pb2.EditOp(attribute=edit, strength=EDIT_STRENGTH)],
            keep=[keep], skip_scores=skip_scores) for png in pngs]

        def call(i: int) -> None:
            resp = stub.Edit(requests[(k + i) % len(requests)], timeout=30)
            if not resp.image.startswith(b"\x89PNG"):
                raise RuntimeError("gateway answered an Edit without a PNG")
            if bool(resp.scores_after) == skip_scores:
                raise RuntimeError(f"gateway answered an Edit with skip_scores={skip_scores} with "
                                   f"{len(resp.scores_after)} scores")

        return Client(call, ch.close)

    return make


def rpc_round_trip_ms(address: str, calls: int = 300) -> float:
    """p50 of an empty unary RPC (grpc.health.v1 Check) to a service: one hop's fixed cost."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        req = health_pb2.HealthCheckRequest()
        t = timed_loop(lambda: stub.Check(req, timeout=10), 0.0, min_iters=calls, warmup=20)
    return percentile(t.per_call, 50) * 1e3
