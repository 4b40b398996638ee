"""End to end: the tiny pack's stack as processes (services.stack, as `make run`), each service with
its /metrics port. A few Edits through the gateway, then every service's /metrics is scraped over
HTTP and parsed: the counters and histograms moved by exactly what the Edits did, in each service."""
import json
import urllib.request

import grpc
import pytest

from services.stack import SERVICES
from tests.support import metric_samples, sample

pytestmark = pytest.mark.e2e


def scrape(stack) -> dict[str, dict]:
    """service -> metric_samples() of its /metrics page, fetched over HTTP."""
    out = {}
    for service in SERVICES:
        with urllib.request.urlopen(stack.metrics_url(service), timeout=10) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
            out[service] = metric_samples(resp.read().decode())
    return out


def test_counters_and_histograms_of_every_service_move_with_the_edits(tiny_stack):
    client = tiny_stack.client(timeout_s=30)
    try:
        attribute = client.attributes().attributes[0]
        before = scrape(tiny_stack)
        ok = [client.edit(client.face(seed=seed), [(attribute, 1.0)]) for seed in range(4)]
        ok.append(client.edit(client.face(latent_id=ok[0].latent_id), [(attribute, 1.0)]))  # a latent cache hit
        errors = []
        for face, edits in ((client.face(latent_id="0" * 24), [(attribute, 1.0)]),  # a cache miss: NOT_FOUND
                            (client.face(seed=9), [])):  # no edits: INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as err:
                client.edit(face, edits)
            errors.append(err.value.code())
        after = scrape(tiny_stack)
    finally:
        client.close()
    assert errors == [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT]
    n = len(ok)

    def moved(service: str, name: str, **labels) -> float:
        return sample(after[service], name, **labels) - sample(before[service], name, **labels)

    def handled(service: str, method: str, code: str) -> float:
        return moved(service, "facedit_grpc_server_handled_total", grpc_service=f"facedit.v1.{service.capitalize()}",
                     grpc_method=method, grpc_code=code)

    # the gateway: every Edit by its code and in the latency histogram
    assert handled("gateway", "Edit", "OK") == n
    assert handled("gateway", "Edit", "NOT_FOUND") == 1
    assert handled("gateway", "Edit", "INVALID_ARGUMENT") == 1
    assert moved("gateway", "facedit_grpc_server_handling_seconds_count",
                 grpc_service="facedit.v1.Gateway", grpc_method="Edit") == n + 2
    assert moved("gateway", "facedit_grpc_server_handling_seconds_sum",
                 grpc_service="facedit.v1.Gateway", grpc_method="Edit") > 0
    # its caches: one latent id found, one not; every Edit that got past validation asked the compose memo,
    # and each memo miss is one Compose call to the directions service, seen at both ends
    assert moved("gateway", "facedit_cache_lookups_total", cache="latent", result="hit") == 1
    assert moved("gateway", "facedit_cache_lookups_total", cache="latent", result="miss") == 1
    hits = moved("gateway", "facedit_cache_lookups_total", cache="compose_memo", result="hit")
    misses = moved("gateway", "facedit_cache_lookups_total", cache="compose_memo", result="miss")
    assert hits + misses == n + 1 and misses >= 1
    assert moved("gateway", "facedit_downstream_call_seconds_count", hop="directions", grpc_method="Compose") \
        == misses == handled("directions", "Compose", "OK")
    # one render and one scoring per successful Edit (sequential Edits: nothing merged), at both ends
    for hop, method in (("generator", "GenerateImages"), ("encoder", "ScoreImages")):
        assert moved("gateway", "facedit_downstream_call_seconds_count", hop=hop, grpc_method=method) == n
        assert handled(hop, method, "OK") == n
    assert moved("gateway", "facedit_batcher_batch_rows_count", batcher="merge-generator:tiny") == n
    # the models' batchers: each Edit renders and scores 2 rows (the face before and after), one batch each
    for service, batcher in (("generator", "gen-tiny"), ("encoder", "cls-tiny")):
        assert moved(service, "facedit_batcher_batch_rows_count", batcher=batcher) == n
        assert moved(service, "facedit_batcher_batch_rows_sum", batcher=batcher) == 2 * n
        assert moved(service, "facedit_batcher_queue_wait_seconds_count", batcher=batcher) == n
        assert moved(service, "facedit_batcher_execution_seconds_count", batcher=batcher) == n
        assert moved(service, "facedit_batcher_execution_seconds_sum", batcher=batcher) > 0
        assert sample(after[service], "facedit_batcher_queued_requests", batcher=batcher) == 0
    assert moved("encoder", "facedit_batcher_batch_rows_count", batcher="enc-tiny") == 0  # no image to encode
    assert not [k for k in after["gateway"] if k[0] == "facedit_redis_errors_total" and after["gateway"][k]]
    # build info: the pack and version each service serves
    version = json.loads((tiny_stack.model_store / "tiny" / "manifest.json").read_text())["version"]
    for service in SERVICES:
        infos = [dict(labels) for (name, labels), value in after[service].items()
                 if name == "facedit_build_info" and value == 1]
        assert [(i["service"], i["pack"], i["pack_version"]) for i in infos] == \
            [(service, "tiny", "" if service == "gateway" else version)]
