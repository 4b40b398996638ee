"""Readiness from loading, draining and dependency checks; liveness apart (services/common/readiness.py),
on a real grpc_health servicer."""
import logging

from grpc_health.v1 import health, health_pb2

from services.common.readiness import LIVENESS, NOT_SERVING, SERVING, Readiness


def status(servicer, name: str) -> int:
    return servicer.Check(health_pb2.HealthCheckRequest(service=name), None).status


def test_ready_only_when_loaded_not_draining_and_every_dependency_answers():
    servicer = health.HealthServicer()
    redis_up = {"up": True}

    def redis_check(timeout_s):
        if not redis_up["up"]:
            raise ConnectionError("connection refused")

    ready = Readiness(servicer, ("", "facedit.v1.Gateway"), logging.getLogger("test"), {"redis": redis_check})
    ready.start()
    try:
        assert status(servicer, "") == SERVING and status(servicer, "facedit.v1.Gateway") == SERVING
        redis_up["up"] = False
        ready.check_now()
        assert status(servicer, "") == NOT_SERVING
        assert ready.reasons() == ["redis: ConnectionError: connection refused"]
        assert status(servicer, LIVENESS) == SERVING  # a restart would not bring Redis back
        redis_up["up"] = True
        ready.loading("pack 'tiny': generator: sha256 does not match")
        ready.check_now()
        assert status(servicer, "") == NOT_SERVING and ready.reasons()[0].startswith("packs: ")
        ready.loading(None)
        assert status(servicer, "") == SERVING
        ready.drain()
        ready.check_now()
        assert status(servicer, "") == NOT_SERVING and ready.reasons() == ["draining"]
    finally:
        ready.close()
