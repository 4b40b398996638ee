"""Metrics of the in-process tiny servers (one registry for the four of them): calls by status code,
bounded method labels, the gateway's downstream failures and Redis errors. The scrape of a stack of
processes over HTTP is tests/e2e/test_metrics_scrape.py."""
import socket

import grpc
import pytest

from services.common.redis_server import connect
from tests.support import local_metrics, other_gateway, sample

GATEWAY = "facedit.v1.Gateway"


def _dead_address() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again before use: nothing listens there


def _moved(before: dict, after: dict, name: str, **labels) -> float:
    return sample(after, name, **labels) - sample(before, name, **labels)


def test_edits_are_counted_by_status_code_and_timed(tiny_servers, client):
    attribute = client.attributes().attributes[0]
    before = local_metrics()
    client.edit(client.face(seed=1), [(attribute, 1.0)])
    client.edit(client.face(seed=2), [(attribute, 1.0)], skip_scores=True)
    with pytest.raises(grpc.RpcError) as err:
        client.edit(client.face(seed=3), [])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = local_metrics()
    handled = "facedit_grpc_server_handled_total"
    assert _moved(before, after, handled, grpc_service=GATEWAY, grpc_method="Edit", grpc_code="OK") == 2
    assert _moved(before, after, handled, grpc_service=GATEWAY, grpc_method="Edit", grpc_code="INVALID_ARGUMENT") == 1
    assert _moved(before, after, "facedit_grpc_server_handling_seconds_count",
                  grpc_service=GATEWAY, grpc_method="Edit") == 3
    # the generator rendered both Edits, the encoder scored only the one without skip_scores
    assert _moved(before, after, handled, grpc_service="facedit.v1.Generator", grpc_method="GenerateImages",
                  grpc_code="OK") == 2
    assert _moved(before, after, handled, grpc_service="facedit.v1.Encoder", grpc_method="ScoreImages",
                  grpc_code="OK") == 1
    assert _moved(before, after, "facedit_downstream_call_seconds_count", hop="generator",
                  grpc_method="GenerateImages") == 2


def test_a_method_the_server_does_not_have_makes_no_series(tiny_servers):
    with grpc.insecure_channel(tiny_servers.addresses["gateway"]) as channel:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/facedit.v1.Gateway/NoSuchMethod")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert not [key for key in local_metrics() if ("grpc_method", "NoSuchMethod") in key[1]]


def test_a_downstream_outage_counts_under_its_hop_and_code(tiny_servers):
    before = local_metrics()
    with other_gateway(tiny_servers, _dead_address(), tiny_servers.redis_client) as (client, _):
        attribute = client.attributes().attributes[0]
        with pytest.raises(grpc.RpcError) as err:
            client.edit(client.face(seed=4), [(attribute, 1.0)])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    after = local_metrics()
    assert _moved(before, after, "facedit_downstream_failed_total", hop="generator", grpc_method="GenerateImages",
                  grpc_code="UNAVAILABLE") == 1
    assert _moved(before, after, "facedit_grpc_server_handled_total", grpc_service=GATEWAY, grpc_method="Edit",
                  grpc_code="UNAVAILABLE") == 1


def test_an_unreachable_redis_counts_as_a_redis_error(tiny_servers):
    """A gateway whose latent cache is on a Redis port where nothing listens: the Edit's cache write fails,
    the call is UNAVAILABLE and facedit_redis_errors_total{kind="connection"} moves by one."""
    host, port = _dead_address().split(":")
    dead_redis = connect(f"redis://{host}:{port}/0")
    before = local_metrics()
    with other_gateway(tiny_servers, tiny_servers.addresses["generator"], dead_redis) as (client, _):
        attribute = client.attributes().attributes[0]
        with pytest.raises(grpc.RpcError) as err:
            client.edit(client.face(seed=5), [(attribute, 1.0)])
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    after = local_metrics()
    assert _moved(before, after, "facedit_redis_errors_total", kind="connection") == 1
