"""Oversize messages: every service refuses a request over its limit before holding it, and its
memory comes back (a gateway process used to keep 1.2 GB after 30 refused 50 MB Edits)."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from facedit.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc, gateway_pb2, gateway_pb2_grpc
from services.common.channels import MAX_REQUEST_BYTES
from services.common.memory import DEFAULT_INTERVAL_S as TRIM_INTERVAL_S

pytestmark = pytest.mark.e2e

HUGE = 50 * 1024 * 1024
MAX_GROWTH_MB = 100


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def send_oversize(call, request, times: int, concurrency: int) -> list[grpc.StatusCode]:
    def one(_):
        try:
            call(request, timeout=30)
            return grpc.StatusCode.OK
        except grpc.RpcError as err:
            return err.code()
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(times)))


def test_oversize_requests_are_refused_and_memory_comes_back(tiny_stack):
    blob = b"\xff" * HUGE
    pids = tiny_stack.pids()
    with grpc.insecure_channel(tiny_stack.address("gateway"), [("grpc.max_send_message_length", -1)]) as gch, \
            grpc.insecure_channel(tiny_stack.address("encoder"), [("grpc.max_send_message_length", -1)]) as ech:
        gateway = gateway_pb2_grpc.GatewayStub(gch)
        encoder = encoder_pb2_grpc.EncoderStub(ech)
        edit = gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(seed=1),
                                       edits=[common_pb2.EditOp(attribute="smile", strength=1)])
        gateway.Edit(edit, timeout=30)  # warm: the baseline is a serving gateway
        before = {s: rss_mb(pids[s]) for s in ("gateway", "encoder")}
        big_edit = gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(image=blob))
        big_encode = encoder_pb2.EncodeImagesRequest(images=[blob])
        codes = (send_oversize(gateway.Edit, big_edit, 30, 1) + send_oversize(gateway.Edit, big_edit, 30, 8)
                 + send_oversize(encoder.EncodeImages, big_encode, 30, 8))
        assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        time.sleep(TRIM_INTERVAL_S + 1)  # the services give freed memory back every few seconds
        after = {s: rss_mb(pids[s]) for s in ("gateway", "encoder")}
        for service in before:
            assert after[service] - before[service] < MAX_GROWTH_MB, (service, before, after)
        # a request just under the limit is read and judged on its content; the gateway still serves
        near = gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(image=b"\xff" * (MAX_REQUEST_BYTES - 4096)))
        with pytest.raises(grpc.RpcError) as info:
            gateway.Edit(near, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
        assert gateway.Edit(edit, timeout=30).image.startswith(b"\x89PNG")
    print(f"RSS MB before -> after 90 refused 50 MB requests: {before} -> {after}")
