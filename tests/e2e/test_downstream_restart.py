"""A downstream service that dies and comes back: the gateway answers UNAVAILABLE while it is gone,
reports itself not ready (liveness stays SERVING), and serves again within 2 s of its return
(channels reconnect within 1 s: services/common/channels.py; gRPC's default backoff took 8.5 s)."""
from __future__ import annotations

import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.readiness import LIVENESS, NOT_SERVING, SERVING

from tests.e2e.test_redis_faults import edit_until_it_works

pytestmark = pytest.mark.e2e


def wait_for_health(stack, name: str, want: int, within_s: float) -> float:
    """Seconds until the gateway's health of `name` is `want`; fails after within_s."""
    t0 = time.monotonic()
    with stack.channel("gateway") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            got = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2).status
            if got == want:
                return time.monotonic() - t0
            assert time.monotonic() - t0 < within_s, f"gateway health {name!r} still {got} after {within_s} s"
            time.sleep(0.05)


@pytest.mark.parametrize("service", ["generator", "encoder"])
def test_the_gateway_recovers_within_2_s_of_a_killed_service_coming_back(tiny_stack, service):
    client = tiny_stack.client(timeout_s=5)
    try:
        face = client.face(seed=2)
        client.edit(face, [("smile", 1.0)], keep=["age"])
        tiny_stack.kill(service)
        with pytest.raises(grpc.RpcError) as info:
            client.edit(face, [("smile", 1.0)], keep=["age"])
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
        assert service in info.value.details()
        wait_for_health(tiny_stack, "", NOT_SERVING, within_s=3)  # readiness: checked every second
        wait_for_health(tiny_stack, LIVENESS, SERVING, within_s=0)
        time.sleep(10)  # the gateway's reconnect attempts back off meanwhile (gRPC default: to 6.5 s apart)
        tiny_stack.restart(service)  # returns once the service answers its health check
        seconds = edit_until_it_works(client, face, within_s=2)
        wait_for_health(tiny_stack, "", SERVING, within_s=3)
        print(f"{service}: the gateway served {seconds:.2f} s after it was back")
    finally:
        client.close()
