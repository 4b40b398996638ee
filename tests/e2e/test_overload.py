"""Overload and shutdown with the services as processes:

- a 15 s flood of the generator by callers who give up after 0.2 s: the requests they abandoned
  never run (the batcher drops them), so normal service is back within 2 s of the flood's end;
- SIGTERM to the gateway with sweeps in flight: every one of them finishes (the grace period).
"""
from __future__ import annotations

import signal
import threading
import time

import grpc
import numpy as np
import pytest

from facedit.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, generator_pb2, generator_pb2_grpc
from facedit_core.pack import load_pack
from services.common.tensors import to_tensor
from services.stack import Stack
from tests.support import MODEL_STORE

pytestmark = pytest.mark.e2e

FLOOD_S = 15.0
RECOVERY_S = 2.0


@pytest.fixture()
def generator(tmp_path):
    """The digiface64 generator service alone (its DCGAN takes ~0.1 s a batch of 64 here: a flood
    outruns it), with a queue long enough to hold the whole flood."""
    s = Stack.on_free_ports(MODEL_STORE, ["digiface64"], tmp_path / "stack", services=("generator",),
                            extra_env={"FACEDIT_MAX_QUEUE": "4096"})
    s.start(timeout_s=60)
    yield s
    s.stop()


def test_after_a_flood_of_abandoned_requests_service_is_back_within_2_s(generator):
    dim = load_pack("digiface64", MODEL_STORE).latent_dim
    request = generator_pb2.GenerateImagesRequest(pack="digiface64", latents=to_tensor(
        np.random.default_rng(0).standard_normal((64, dim), dtype=np.float32)))
    small = generator_pb2.GenerateImagesRequest(pack="digiface64", latents=to_tensor(np.zeros((1, dim), np.float32)))
    stop, counts = threading.Event(), {"sent": 0, "ok": 0}
    with grpc.insecure_channel(generator.address("generator")) as channel:
        stub = generator_pb2_grpc.GeneratorStub(channel)

        def flood():
            while not stop.is_set():
                future = stub.GenerateImages.future(request, timeout=0.2)  # callers that give up fast
                counts["sent"] += 1
                try:
                    future.result()
                    counts["ok"] += 1
                except grpc.RpcError:
                    pass
        threads = [threading.Thread(target=flood, daemon=True) for _ in range(48)]
        for t in threads:
            t.start()
        time.sleep(FLOOD_S)
        stop.set()
        t_end = time.monotonic()
        # the first normal call after the flood: keep asking with a 0.5 s deadline until one is answered
        answered_after = None
        while time.monotonic() - t_end < 10:
            try:
                stub.GenerateImages(small, timeout=0.5)
                answered_after = time.monotonic() - t_end
                break
            except grpc.RpcError:
                continue
        for t in threads:
            t.join(5)
    assert counts["sent"] > 200, counts  # it was a flood
    assert answered_after is not None and answered_after <= RECOVERY_S, (answered_after, counts)


def test_sigterm_to_the_gateway_finishes_every_call_in_flight(tiny_stack):
    """8 EditSweeps of 64 frames, each provably in flight (its first frame received, the rest still
    to be sent), then SIGTERM to the gateway: every sweep still delivers all 64 frames and OK
    within the grace period, and the gateway exits 0. (Calls that reach a draining gateway after
    SIGTERM are refused; clients retry them elsewhere.)"""
    request = gateway_pb2.EditSweepRequest(face=gateway_pb2.FaceSource(seed=3),
                                           edit=common_pb2.EditOp(attribute="smile"), start=-2.0, stop=2.0, steps=64)
    with grpc.insecure_channel(tiny_stack.address("gateway")) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        sweeps = [stub.EditSweep(request, timeout=30) for _ in range(8)]
        first = [next(s) for s in sweeps]  # each sweep has started on the gateway
        tiny_stack.procs["gateway"].send_signal(signal.SIGTERM)
        frames, codes = [], []
        for s, f in zip(sweeps, first):
            try:
                frames.append(1 + sum(1 for _ in s))
                codes.append("OK")
            except grpc.RpcError as err:
                codes.append(err.code().name)
    assert codes == ["OK"] * 8 and frames == [64] * 8, (codes, frames)
    assert all(f.index == 0 for f in first)
    assert tiny_stack.procs["gateway"].wait(10) == 0  # and it stopped cleanly
