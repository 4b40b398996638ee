"""Per-client rate and concurrency limits at a real gateway on loopback (services/common/admission.py):
one client over its limits gets RESOURCE_EXHAUSTED with a retry hint, the others are not slowed.

The concurrency test holds Edits in progress with a stand-in generator that answers only when the
test lets it (a test double: the real generator answers too fast to hold calls deterministically)."""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from facedit.v1 import generator_pb2, generator_pb2_grpc
from services.client import FaceditClient
from services.common.admission import RETRY_PUSHBACK
from services.common.server import Service, start_local
from services.common.tensors import from_tensor, to_tensor
from services.gateway import server as gateway
from tests.support import LOGGER

TOKENS = {"slow": ("slow-token-0123456789abcdef", {"rate_per_s": 2, "burst": 2}),
          "pair": ("pair-token-0123456789abcdef", {"concurrency": 2}),
          "other": ("other-token-0123456789abcdef", {})}


class HeldGenerator(generator_pb2_grpc.GeneratorServicer):
    """Answers GenerateImages with grey faces, but only once `release` is set."""

    def __init__(self, resolution: int):
        self.resolution, self.release, self.waiting = resolution, threading.Event(), 0

    def GenerateImages(self, request, context):
        self.waiting += 1
        self.release.wait(30)
        n = from_tensor(request.latents, "latents").shape[0]
        return generator_pb2.GenerateImagesResponse(
            pixels=to_tensor(np.full((n, self.resolution, self.resolution, 3), 128, np.uint8)))


@pytest.fixture(scope="module")
def limited(tiny_servers, tmp_path_factory, pack):
    """A gateway with tokens and tight default limits (rate 50/s, concurrency 8) over the tiny stack's
    encoder and directions and a HeldGenerator."""
    held = HeldGenerator(pack.resolution)
    fake = Service("generator", held, generator_pb2_grpc.add_GeneratorServicer_to_server, "facedit.v1.Generator")
    fake_server, fake_address = start_local(fake, LOGGER)
    path = tmp_path_factory.mktemp("admission") / "tokens.json"
    path.write_text(json.dumps({"clients": [{"name": n, "token": t, "roles": ["edit"], **own}
                                            for n, (t, own) in TOKENS.items()]}))
    a = tiny_servers.addresses
    args = gateway.parser().parse_args([
        "--encoder", a["encoder"], "--directions", a["directions"], "--generator", fake_address,
        "--redis-url", tiny_servers.redis_url,
        "--default-pack", "tiny", "--tokens-file", str(path),
        "--client-rate-per-s", "50", "--client-burst", "50", "--client-concurrency", "8"])
    service = gateway.create(args, LOGGER)
    server, address = start_local(service, LOGGER)
    clients = {n: FaceditClient(address, timeout_s=20, token=t) for n, (t, _) in TOKENS.items()}
    yield clients, held
    held.release.set()
    for c in clients.values():
        c.close()
    server.stop(0).wait()
    service.stop()
    fake_server.stop(0).wait()


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
    return info.value


def test_a_client_over_its_rate_is_told_when_to_retry_and_others_are_not_slowed(limited):
    clients, _ = limited
    slow, other = clients["slow"], clients["other"]
    slow.attributes()
    slow.attributes()  # its burst of 2
    err = refusal(slow.attributes)
    assert "client slow is over its rate of 2 calls/s (burst 2); retry after" in err.details()
    pushback = dict(err.trailing_metadata())[RETRY_PUSHBACK]
    assert 1 <= int(pushback) <= 500, pushback
    for _ in range(10):  # another client, its own budget (the default 50/s)
        other.attributes()
    time.sleep(int(pushback) / 1000 + 0.05)
    slow.attributes()  # after the hint it is served again


def test_a_client_over_its_concurrency_is_refused_while_its_calls_are_in_progress(limited):
    clients, held = limited
    pair, other = clients["pair"], clients["other"]
    held.release.clear()
    before = held.waiting
    with ThreadPoolExecutor(2) as pool:
        edits = [pool.submit(pair.edit, pair.face(seed=k), [("smile", 1.0)], skip_scores=True) for k in range(2)]
        give_up = time.monotonic() + 10
        while held.waiting < before + 2 and time.monotonic() < give_up:
            time.sleep(0.01)
        assert held.waiting == before + 2, "the two Edits never reached the generator"
        err = refusal(pair.attributes)
        assert "client pair has 2 calls in progress, its limit" in err.details()
        other.attributes()  # not held back by pair's calls
        held.release.set()
        for e in edits:
            assert e.result(timeout=20).image
    pair.attributes()  # its calls ended: served again
