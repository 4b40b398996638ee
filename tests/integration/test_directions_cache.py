"""The directions service's in-process snapshot of a pack version, against a real Redis:
one MGET per Compose when nothing changed, and never stale after a version switch, a
custom direction (also one written by another replica) or a Redis that restarted empty."""

import grpc
import numpy as np
import pytest

from facedit.v1 import common_pb2, directions_pb2, directions_pb2_grpc
from facedit_core.pack import load_pack
from facedit_core.records import DirectionRecord
from services.common.redis_server import connect
from services.common.server import Service, start_local
from services.common.tensors import from_tensor
from services.directions.registry import Registry
from services.directions.server import DirectionsServicer
from tests.support import LOGGER


@pytest.fixture()
def redis_db(redis_server):
    """Database 6 of the session's Redis (0 belongs to tiny_servers, 7 to test_crg_directions)."""
    client = connect(redis_server.url.rsplit("/", 1)[0] + "/6")
    client.flushdb()
    yield client
    client.flushdb()


def calls(client, command: str) -> int:
    """How many times Redis has run `command` since it started (INFO commandstats)."""
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def custom(name: str) -> DirectionRecord:
    return DirectionRecord(id=f"custom/{name}", attribute=name, method="custom", strength_min=-1.0,
                           strength_max=2.0, strength_limit=10.0, strength_meaning="test", metrics={},
                           provenance={})


def test_snapshot_is_read_once_and_then_checked_with_one_mget(tiny_pack, redis_db):
    pack = load_pack("tiny", tiny_pack[1])
    registry = Registry(redis_db)
    registry.publish(pack)
    first = registry.snapshot("tiny")
    assert first.info.version == pack.version and "interfacegan/smile" in first.records
    before = {c: calls(redis_db, c) for c in ("mget", "hgetall", "exec", "get", "hmget", "hkeys")}
    for _ in range(10):
        assert registry.snapshot("tiny") is first
    after = {c: calls(redis_db, c) for c in before}
    assert after["mget"] - before["mget"] == 10
    assert all(after[c] == before[c] for c in before if c != "mget")
    (rec, vec), = first.get(["interfacegan/smile"])
    assert not vec.flags.writeable  # shared by every request: nobody may change it in place
    assert np.array_equal(vec, registry.get(first.info, ["interfacegan/smile"])[0][1])


def test_snapshot_follows_version_switch_custom_directions_and_restart(tiny_pack, redis_db):
    pack = load_pack("tiny", tiny_pack[1])
    registry, replica = Registry(redis_db), Registry(redis_db)  # two directions processes, one Redis
    registry.publish(pack)
    old = registry.snapshot("tiny")
    replica.put(replica.pack_info("tiny"), custom("mine"), np.ones(pack.latent_dim))
    with_custom = registry.snapshot("tiny")
    assert "custom/mine" in with_custom.records and "custom/mine" not in old.records
    assert np.allclose(with_custom.get(["custom/mine"])[0][1], 1 / np.sqrt(pack.latent_dim))

    newer = type(pack)(**{**pack.__dict__, "version": pack.version + "-b"})
    replica.publish(newer)
    switched = registry.snapshot("tiny")
    assert switched.info.version == newer.version and "custom/mine" not in switched.records
    replica.publish(pack)  # back: the old version with its custom direction
    back = registry.snapshot("tiny")
    assert back.info.version == pack.version and "custom/mine" in back.records

    redis_db.flushdb()  # Redis restarted empty; the directions service publishes the same version again
    replica.publish(pack)
    assert "custom/mine" not in registry.snapshot("tiny").records


def test_compose_sees_a_custom_direction_at_once_and_loses_it_on_switch(tiny_pack, redis_db):
    _, store = tiny_pack
    pack = load_pack("tiny", store)
    registry = Registry(redis_db)
    registry.publish(pack)
    server, address = start_local(Service("directions", DirectionsServicer(registry, store, "tiny"),
                                          directions_pb2_grpc.add_DirectionsServicer_to_server, "facedit.v1.Directions"),
                                  LOGGER)
    edit = directions_pb2.ComposeRequest(edits=[common_pb2.EditOp(direction_id="custom/mine", strength=2.0)])
    try:
        with grpc.insecure_channel(address) as ch:
            stub = directions_pb2_grpc.DirectionsStub(ch)
            smile = stub.Compose(directions_pb2.ComposeRequest(
                edits=[common_pb2.EditOp(attribute="smile", strength=1.0)]), timeout=10)  # warms the snapshot
            assert smile.pack.version == pack.version
            vector = np.zeros(pack.latent_dim, np.float32)
            vector[3] = 4.0
            Registry(redis_db).put(registry.pack_info("tiny"), custom("mine"), vector)  # another replica
            delta = from_tensor(stub.Compose(edit, timeout=10).delta)
            assert np.allclose(delta, 2.0 * vector / 4.0)
            Registry(redis_db).publish(type(pack)(**{**pack.__dict__, "version": pack.version + "-b"}))
            with pytest.raises(grpc.RpcError) as err:
                stub.Compose(edit, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "custom/mine" in err.value.details()
    finally:
        server.stop(0)
