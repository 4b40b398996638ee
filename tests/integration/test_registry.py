"""The direction registry against a real Redis server: publishing, atomic
version switch, and what callers see when Redis goes away and comes back."""
import json

import grpc
import numpy as np
import pytest

from facedit.v1 import directions_pb2, directions_pb2_grpc
from facedit_core.pack import load_pack
from services.common.redis_server import EmbeddedRedis, connect
from services.common.server import Service, start_local
from services.directions.registry import Registry
from services.directions.server import DirectionsServicer
from tests.support import LOGGER


def test_publish_writes_every_direction_and_activates_the_version(tiny_pack, redis_client):
    _, store = tiny_pack
    pack = load_pack("tiny", store)
    registry = Registry(redis_client)
    istrc_attributes = json.loads(pack.artefact("istrc").read_text())["attributes"]  # derived at publish
    assert registry.publish(pack) == len(json.loads(pack.artefact("directions").read_text())) + len(istrc_attributes)
    info = registry.pack_info("tiny")
    assert info.version == pack.version and info.latent_dim == pack.latent_dim
    assert info.attributes == pack.attributes
    records = registry.list(info)
    assert sorted(r.id for r in records if r.method == "interfacegan") == sorted(f"interfacegan/{a}" for a in pack.attributes)
    (rec, vec), = registry.get(info, ["interfacegan/smile"])
    row = next(r["row"] for r in json.loads(pack.artefact("directions").read_text()) if r["id"] == "interfacegan/smile")
    expected = np.load(pack.artefact("direction_vectors"))[row]
    assert np.array_equal(vec, expected) and rec.metrics["validation_accuracy"] > 0


def test_switching_versions_is_one_set_and_old_versions_stay_readable(tiny_pack, redis_client):
    _, store = tiny_pack
    pack = load_pack("tiny", store)
    registry = Registry(redis_client)
    registry.publish(pack)
    # a second version of the same pack, published under another version name
    newer = type(pack)(**{**pack.__dict__, "version": pack.version + "-b"})
    registry.publish(newer)
    assert registry.pack_info("tiny").version == newer.version
    old = type(registry.pack_info("tiny"))(name="tiny", version=pack.version, latent_dim=pack.latent_dim,
                                           default_method="interfacegan", attributes=pack.attributes)
    assert len(registry.list(old)) == len(registry.list(registry.pack_info("tiny")))  # rollback target is intact


def test_redis_outage_is_unavailable_and_service_recovers(tiny_pack, tmp_path):
    _, store = tiny_pack
    redis_server = EmbeddedRedis(workdir=str(tmp_path)).start()
    registry = Registry(connect(redis_server.url))
    registry.publish(load_pack("tiny", store))
    server, address = start_local(Service("directions", DirectionsServicer(registry, store, "tiny"),
                                          directions_pb2_grpc.add_DirectionsServicer_to_server, "facedit.v1.Directions"),
                                  LOGGER)
    try:
        with grpc.insecure_channel(address) as ch:
            stub = directions_pb2_grpc.DirectionsStub(ch)
            assert stub.ListDirections(directions_pb2.ListDirectionsRequest(), timeout=10).directions
            redis_server.stop()
            with pytest.raises(grpc.RpcError) as err:
                stub.ListDirections(directions_pb2.ListDirectionsRequest(), timeout=20)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "Redis" in err.value.details()
            redis_server.start()  # same port, empty: publish again, as the service does at start-up
            registry.publish(load_pack("tiny", store))
            assert stub.ListDirections(directions_pb2.ListDirectionsRequest(), timeout=10).directions
    finally:
        server.stop(0)
        redis_server.stop()
