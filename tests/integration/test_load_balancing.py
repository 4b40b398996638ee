"""Calls spread over replicas (services/common/channels.py: round_robin over every address a target
resolves to): a gateway whose generator target names two generator replicas sends calls to both.

In Kubernetes the name is a headless Service (`dns:///generator:50053`, one address per ready pod);
here the two replicas are one target through gRPC's `ipv4:` resolver (the sandbox's DNS cannot be
given a name with two addresses); both resolvers hand their addresses to the same round_robin policy."""
from __future__ import annotations

import threading

from services.common.server import start_local
from services.generator import server as generator
from tests.support import LOGGER, other_gateway


def counted_replica(store):
    """A real generator service on loopback whose GenerateImages calls are counted."""
    service = generator.create(generator.parser().parse_args(
        ["--model-store", str(store), "--packs", "tiny", "--threads", "1"]), LOGGER)
    calls, lock, real = [0], threading.Lock(), service.servicer.GenerateImages

    def generate_images(request, context):
        with lock:
            calls[0] += 1
        return real(request, context)

    service.servicer.GenerateImages = generate_images  # read when the server registers the method
    server, address = start_local(service, LOGGER)
    return service, server, address, calls


def test_a_gateway_spreads_generate_calls_over_two_replicas(tiny_servers, tiny_pack, redis_client):
    replicas = [counted_replica(tiny_pack[1]) for _ in range(2)]
    target = "ipv4:" + ",".join(address for _, _, address, _ in replicas)
    try:
        with other_gateway(tiny_servers, target, redis_client) as (client, _):
            for seed in range(20):
                assert client.generate([seed]).images
        counts = [calls[0] for _, _, _, calls in replicas]
        assert sum(counts) == 20 and min(counts) >= 8, counts  # round robin: about half each
    finally:
        for service, server, _, _ in replicas:
            server.stop(0).wait()
            service.stop()
