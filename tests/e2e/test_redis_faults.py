"""Redis faults with the whole stack running as processes (the embedded Redis of `make run`: a
password, an append-only file, a memory cap that can only evict cached latents).

- Redis SIGKILLed and restarted on the same data: the packs, the custom directions and the
  cached latents are all still there, and edits work again.
- Redis restarted empty: the directions service publishes its packs again by itself within
  seconds, and edits work again with no manual step (custom directions are gone: they live only
  in Redis).
"""
from __future__ import annotations

import time

import grpc
import pytest
import redis

from services.client import FaceditClient
from services.common.redis_server import EmbeddedRedis, connect
from services.stack import Stack
from tests.integration.test_crg_directions import glasses_pngs

pytestmark = pytest.mark.e2e


def restart_redis(stack: Stack, empty: bool) -> float:
    """SIGKILL the stack's Redis and start another on the same port and password: on the same
    folder (its append-only file), or on an empty one. Returns time.monotonic() of the restart."""
    old = stack.redis
    old.proc.kill()
    old.proc.wait(10)
    folder = old.dir.parent / "redis-empty" if empty else old.dir
    stack.redis = EmbeddedRedis(port=old.port, workdir=str(folder), password=old.password).start()
    return time.monotonic()


def edit_until_it_works(client: FaceditClient, face, within_s: float) -> float:
    """Seconds until an Edit succeeds (each try with a 2 s deadline), failing after within_s."""
    t0, last = time.monotonic(), None
    while time.monotonic() - t0 < within_s:
        try:
            client.edit(face, [("smile", 1.0)], keep=["age"])
            return time.monotonic() - t0
        except grpc.RpcError as err:
            last = f"{err.code().name}: {err.details()}"
            time.sleep(0.1)
    raise AssertionError(f"no successful Edit within {within_s} s; last error {last}")


def test_redis_killed_and_restarted_on_its_data_keeps_directions_and_latents(tiny_stack):
    client = FaceditClient(tiny_stack.address("gateway"), timeout_s=10)
    try:
        positive, negative = glasses_pngs()
        client.create_direction("my_glasses", positive, negative)
        latent_id = client.edit(client.face(seed=4), [("smile", 1.0)]).latent_id
        time.sleep(1.2)  # the append-only file is written to disk every second
        restart_redis(tiny_stack, empty=False)
        edit_until_it_works(client, client.face(seed=5), within_s=10)
        kept = client.edit(client.face(latent_id=latent_id), [("custom/my_glasses", 1.0)])
        assert kept.image.startswith(b"\x89PNG")
        assert "custom/my_glasses" in {d.id for d in client.attributes().directions}
    finally:
        client.close()


def test_redis_restarted_empty_gets_the_packs_back_without_a_manual_step(tiny_stack):
    client = FaceditClient(tiny_stack.address("gateway"), timeout_s=10)
    try:
        client.edit(client.face(seed=1), [("smile", 1.0)])
        t_restart = restart_redis(tiny_stack, empty=True)
        waited = edit_until_it_works(client, client.face(seed=2), within_s=5)
        assert time.monotonic() - t_restart < 5, waited
        r = connect(tiny_stack.redis_url)
        assert r.get("facedit:pack:tiny:active") is not None  # published again by the directions service
    finally:
        client.close()


def test_the_embedded_redis_wants_its_password_and_evicts_only_cached_latents(tiny_stack):
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=tiny_stack.redis.port).ping()
    r = connect(tiny_stack.redis_url)
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "volatile-lru"}
    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert tiny_stack.redis.password not in " ".join(str(a) for a in tiny_stack.redis.command())
