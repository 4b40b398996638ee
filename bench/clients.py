"""The gRPC load clients of `python -m bench`: the Python one (one harness.Client per load thread),
the prepared requests of the compiled one (h2load, bench/h2load.py), and the empty RPC that
measures one hop's fixed cost."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

from bench.h2load import Target, prepare
from bench.harness import Client, percentile, timed_loop
from bench.workload import EDIT_KINDS, EDIT_STRENGTH
from facedit_core.pack import Pack


def channel(address: str) -> grpc.Channel:
    return grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20),
                                                   ("grpc.max_send_message_length", 64 << 20)])


def generator_request(pack: Pack, seed: int):
    """GenerateImages of one latent (standard normal, from `seed`)."""
    from facedit.v1 import generator_pb2
    from services.common.tensors import to_tensor

    z = np.random.default_rng(seed).standard_normal((1, pack.latent_dim), dtype=np.float32)
    return generator_pb2.GenerateImagesRequest(pack=pack.name, latents=to_tensor(z))


def check_generated(resp, pack: Pack) -> int:
    """A real answer to generator_request: one image at the pack's resolution; returns the batch size
    that served it."""
    expected = [1, pack.resolution, pack.resolution, 3]
    if list(resp.pixels.shape) != expected:
        raise RuntimeError(f"generator answered shape {list(resp.pixels.shape)}, expected {expected}")
    return resp.batch_size


def edit_request(png: bytes, edit: str, keep: str, skip_scores: bool):
    """Edit of a PNG (FaceSource.image), one edit at EDIT_STRENGTH and one kept attribute."""
    from facedit.v1 import common_pb2, gateway_pb2

    return gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(image=png),
                                   edits=[common_pb2.EditOp(attribute=edit, strength=EDIT_STRENGTH)],
                                   keep=[keep], skip_scores=skip_scores)


def check_edited(resp, skip_scores: bool) -> None:
    """A real answer to edit_request: a PNG, and scores unless skip_scores."""
    if not resp.image.startswith(b"\x89PNG"):
        raise RuntimeError("gateway answered an Edit without a PNG")
    if bool(resp.scores_after) == skip_scores:
        raise RuntimeError(f"gateway answered an Edit with skip_scores={skip_scores} with "
                           f"{len(resp.scores_after)} scores")


def generator_client(address: str, pack: Pack) -> Callable[[int], Client]:
    """One latent per GenerateImages request (16 latents per thread, in turn); returns the batch size
    that served it."""
    from facedit.v1 import generator_pb2_grpc

    def make(k: int) -> Client:
        ch = channel(address)
        stub = generator_pb2_grpc.GeneratorStub(ch)
        requests = [generator_request(pack, 16 * k + j) for j in range(16)]

        def call(i: int) -> int:
            return check_generated(stub.GenerateImages(requests[i % len(requests)], timeout=30), pack)

        return Client(call, ch.close)

    return make


def gateway_client(address: str, pngs: list[bytes], edit: str, keep: str,
                   skip_scores: bool = False) -> Callable[[int], Client]:
    """Edit with FaceSource.image (a PNG), one edit and one kept attribute, full (scores) or lean
    (skip_scores); returns None."""
    from facedit.v1 import gateway_pb2_grpc

    def make(k: int) -> Client:
        ch = channel(address)
        stub = gateway_pb2_grpc.GatewayStub(ch)
        requests = [edit_request(png, edit, keep, skip_scores) for png in pngs]

        def call(i: int) -> None:
            check_edited(stub.Edit(requests[(k + i) % len(requests)], timeout=30), skip_scores)

        return Client(call, ch.close)

    return make


def h2load_targets(addresses: dict[str, str], pack: Pack, pngs: list[bytes], edit: str, keep: str,
                   work: Path) -> dict[str, Target]:
    """The compiled client's prepared requests (bench/h2load.py), each made once with Python and
    checked, for the size of a real answer: "generator": GenerateImages of one latent; with `pngs`,
    "gateway_lean" / "gateway_full": an Edit of the first face with / without skip_scores."""
    from facedit.v1 import gateway_pb2_grpc, generator_pb2_grpc

    out = {}
    with channel(addresses["generator"]) as ch:
        stub = generator_pb2_grpc.GeneratorStub(ch)

        def generate(request):
            resp = stub.GenerateImages(request, timeout=30)
            check_generated(resp, pack)
            return resp

        out["generator"] = prepare("generator", addresses["generator"], "/facedit.v1.Generator/GenerateImages",
                                   generator_request(pack, 0), generate, work)
    if not pngs:
        return out
    with channel(addresses["gateway"]) as ch:
        stub = gateway_pb2_grpc.GatewayStub(ch)
        for kind in EDIT_KINDS:
            def edit_once(request, skip=kind == "lean"):
                resp = stub.Edit(request, timeout=30)
                check_edited(resp, skip)
                return resp

            out[f"gateway_{kind}"] = prepare(f"gateway_{kind}", addresses["gateway"], "/facedit.v1.Gateway/Edit",
                                             edit_request(pngs[0], edit, keep, kind == "lean"), edit_once, work)
    return out


def rpc_round_trip_ms(address: str, calls: int = 300) -> float:
    """p50 of an empty unary RPC (grpc.health.v1 Check) to a service: one hop's fixed cost."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        req = health_pb2.HealthCheckRequest()
        t = timed_loop(lambda: stub.Check(req, timeout=10), 0.0, min_iters=calls, warmup=20)
    return percentile(t.per_call, 50) * 1e3
