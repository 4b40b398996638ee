"""The publish-pack Job's script (k8s/base/publish_pack.py) against a real directions service with mTLS,
using the certificates that k8s/generate-secrets.sh makes for the cluster: the admin's certificate
publishes, the gateway's may not, an unknown pack is refused, and a service that is not there yet is
waited for and then reported."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from services.common.server import start_local
from services.directions import server as directions
from tests.support import LOGGER, ROOT

SCRIPT = ROOT / "k8s/base/publish_pack.py"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    k8s = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(ROOT / "k8s", k8s, ignore=shutil.ignore_patterns("generated", "__pycache__"))
    subprocess.run(["sh", str(k8s / "generate-secrets.sh")], check=True, capture_output=True)
    return k8s / "components/tls-files/generated"


@pytest.fixture(scope="module")
def secured_directions(tiny_pack, redis_server, certs):
    _, store = tiny_pack
    args = directions.parser().parse_args([
        "--model-store", str(store), "--packs", "tiny", "--redis-url", redis_server.url,
        "--tls-cert", str(certs / "directions.crt"), "--tls-key", str(certs / "directions.key"),
        "--tls-client-ca", str(certs / "ca.crt")])
    service = directions.create(args, LOGGER)
    server, address = start_local(service, LOGGER)
    yield address
    server.stop(0).wait()
    service.stop()


def publish(address: str, certs, peer: str, pack: str = "tiny", *more: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "protos"), str(ROOT)])}
    return subprocess.run([sys.executable, str(SCRIPT), "--pack", pack, "--address", address,
                           "--ca", str(certs / "ca.crt"), "--cert", str(certs / f"{peer}.crt"),
                           "--key", str(certs / f"{peer}.key"), *more],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def test_the_admin_publishes_the_pack_and_activates_its_version(secured_directions, certs, pack, redis_client):
    redis_client.delete("facedit:pack:tiny:active")
    done = publish(secured_directions, certs, "admin")
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["pack"] == "tiny" and got["version"] == pack.version and got["directions"] > 0
    assert redis_client.get("facedit:pack:tiny:active").decode() == pack.version


def test_the_gateways_certificate_may_not_publish(secured_directions, certs):
    done = publish(secured_directions, certs, "gateway")
    assert done.returncode == 1 and "PERMISSION_DENIED" in done.stderr and "'admin'" in done.stderr


def test_an_unknown_pack_is_refused_without_retrying(secured_directions, certs):
    done = publish(secured_directions, certs, "admin", "nosuchpack")
    assert done.returncode == 1 and "INVALID_ARGUMENT" in done.stderr


def test_a_service_that_is_not_there_is_waited_for_then_reported(certs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = publish(f"127.0.0.1:{port}", certs, "admin", "tiny", "--wait-s", "3", "--retry-s", "1",
                   "--timeout-s", "1")
    assert done.returncode == 2 and "not ready" in done.stderr and "DEADLINE_EXCEEDED" in done.stderr
