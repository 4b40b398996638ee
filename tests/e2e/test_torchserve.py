"""The generator's torchserve backend against a real TorchServe 0.12 (Java) on loopback.

The tiny pack's generator is archived into a .mar (training/torchserve_export.py), served
by TorchServe (services/generator/torchserve_runner.py, stopped by pid at teardown) and
called through a real generator gRPC server whose backend is TorchServeGenerator.
The last test stops TorchServe: keep it last.
"""
from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from facedit.v1 import generator_pb2, generator_pb2_grpc
from facedit_core.errors import FaceditError
from services.common.server import Service, start_local
from services.common.tensors import from_tensor, to_tensor
from services.generator import ts_handler
from tests.support import LOGGER, other_gateway

pytestmark = pytest.mark.torchserve

DELAY_MS = 50  # TorchServe's maxBatchDelay here: long enough that concurrent calls share a batch


@pytest.fixture(scope="module")
def reference(pack):
    """ONNX Runtime run directly on the pack's generator.onnx."""
    session = ort.InferenceSession(str(pack.artefact("generator")), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda z: session.run(None, {name: np.asarray(z, dtype=np.float32)})[0]


@pytest.fixture(scope="module")
def mar(pack, tmp_path_factory):
    """The tiny pack's generator as a TorchServe model archive."""
    if shutil.which("java") is None:
        pytest.skip("TorchServe needs Java 17 (`java` is not on PATH)")
    from training.packs.torchserve_export import build_mar

    return build_mar(pack.root, tmp_path_factory.mktemp("mar"), batch_size=16, max_batch_delay_ms=DELAY_MS)


@pytest.fixture(scope="module")
def torchserve(mar, tmp_path_factory):
    from services.generator.torchserve_runner import TorchServe

    server = TorchServe(mar, tmp_path_factory.mktemp("torchserve") / "run").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def backend(pack, torchserve):
    from services.generator.torchserve_backend import TorchServeGenerator

    gen = TorchServeGenerator(pack, torchserve.address)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def generator_stub(backend):
    """A real generator gRPC server on 127.0.0.1 with the torchserve backend."""
    from services.generator.server import GeneratorServicer

    servicer = GeneratorServicer({"tiny": backend}, "tiny")
    server, address = start_local(Service("generator", servicer, generator_pb2_grpc.add_GeneratorServicer_to_server,
                                          "facedit.v1.Generator"), LOGGER, max_workers=20)
    channel = grpc.insecure_channel(address)
    stub = generator_pb2_grpc.GeneratorStub(channel)
    stub.port = int(address.rsplit(":", 1)[1])  # the gateway test points a gateway at this server
    yield stub
    channel.close()
    server.stop(0).wait()


def latents(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 16)).astype(np.float32)


def test_gateway_edits_through_the_torchserve_backend(generator_stub, tiny_servers, client, redis_server):
    """A gateway whose generator hop is the TorchServe-backed generator server: a full Edit
    (seed -> compose -> generate -> score) gives the image the ONNX Runtime stack gives."""
    import io

    from PIL import Image

    from services.common.redis_server import connect

    ts_generator = f"127.0.0.1:{generator_stub.port}"
    with other_gateway(tiny_servers, ts_generator, connect(redis_server.url)) as (ts_client, _):
        via_ts = ts_client.edit(ts_client.face(seed=5), [("smile", 2.0)])
        via_ort = client.edit(client.face(seed=5), [("smile", 2.0)])
    a = np.asarray(Image.open(io.BytesIO(via_ts.image)), np.int16)
    b = np.asarray(Image.open(io.BytesIO(via_ort.image)), np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() <= 1
    assert via_ts.scores_after["smile"] == pytest.approx(via_ort.scores_after["smile"], abs=0.01)


def generate(stub, z):
    return stub.GenerateImages(generator_pb2.GenerateImagesRequest(latents=to_tensor(z)), timeout=20)


def concurrently(fns):
    """Run the callables at once (a barrier lines them up); return results or exceptions, in order."""
    barrier = threading.Barrier(len(fns))

    def run(fn):
        barrier.wait()
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 - the test looks at it
            return err

    with ThreadPoolExecutor(len(fns)) as ex:
        return list(ex.map(run, fns))


class FakeContext:
    """What TorchServe's Context gives a handler, enough for a unit test."""

    def __init__(self, model_dir):
        self.system_properties = {"model_dir": str(model_dir)}
        self.manifest = {"model": {"serializedFile": "generator.onnx"}}
        self.model_yaml_config = {}
        self.statuses = {}

    def set_response_status(self, code=200, phrase="", idx=0):
        self.statuses[idx] = (code, phrase)

    def set_response_content_type(self, idx, value):
        pass


def test_handler_answers_every_request_of_a_batch(pack, reference):
    handler = ts_handler.GeneratorHandler()
    ctx = FakeContext(pack.root)
    handler.initialize(ctx)
    z = latents(3, seed=1)
    out = handler.handle([{"data": z[:2].tobytes()}, {"data": b"\0" * 10}, {"body": bytearray(z[2:].tobytes())}], ctx)
    assert len(out) == 3 and set(ctx.statuses) == {1} and ctx.statuses[1][0] == 400
    heads = [ts_handler.HEADER.unpack_from(o) for o in out]
    assert [h[1] for h in heads] == [0, 400, 0] and [h[2] for h in heads] == [2, 0, 1]
    assert all(h[4] == 3 and h[5] == 3 for h in heads)  # 3 latents in the ORT call, 3 requests in the batch
    assert "multiple of 64" in out[1][ts_handler.HEADER.size:].decode()
    size = ts_handler.HEADER.size
    pixels = np.frombuffer(out[0][size:] + out[2][size:], np.uint8).reshape(3, 32, 32, 3)
    np.testing.assert_array_equal(pixels, reference(z))


def test_torchserve_batches_as_configured(torchserve):
    (model,) = torchserve.describe()
    assert model["batchSize"] == 16 and model["maxBatchDelay"] == DELAY_MS
    assert [w["status"] for w in model["workers"]] == ["READY"]


def test_generate_images_through_torchserve_matches_onnx_runtime(generator_stub, reference, pack):
    z = latents(5, seed=2)
    resp = generate(generator_stub, z)
    pixels = from_tensor(resp.pixels)
    assert pixels.shape == (5, 32, 32, 3) and pixels.dtype == np.uint8
    diff = np.abs(pixels.astype(int) - reference(z).astype(int))
    assert diff.max() <= 1, f"{(diff > 0).sum()} pixels differ, by up to {diff.max()}"
    assert resp.pack.name == "tiny" and resp.pack.version == pack.version
    assert resp.batch_size >= 5


def test_sixteen_concurrent_requests_share_torchserve_batches(generator_stub, reference):
    z = latents(16, seed=3)
    expected = reference(z)
    for _ in range(3):  # a loaded machine may still serve one round one by one
        results = concurrently([lambda i=i: generate(generator_stub, z[i:i + 1]) for i in range(16)])
        errors = [r for r in results if isinstance(r, Exception)]
        assert not errors, errors[0]
        for i, resp in enumerate(results):
            assert np.abs(from_tensor(resp.pixels)[0].astype(int) - expected[i].astype(int)).max() <= 1
        if max(r.batch_size for r in results) > 1:
            break
    sizes = sorted(r.batch_size for r in results)
    assert sizes[-1] > 1, f"no TorchServe batch held more than one request: {sizes}"


def test_malformed_request_fails_alone_with_invalid_argument(backend, reference):
    good = latents(1, seed=4)
    shared = False
    for _ in range(3):
        bad_result, good_result = concurrently([lambda: backend.predict(b"\0" * 10, 10),
                                                lambda: backend.predict(good.tobytes(), 10)])
        assert isinstance(bad_result, FaceditError), bad_result
        assert bad_result.status == "INVALID_ARGUMENT"
        assert "10 bytes is not a positive multiple of 64" in str(bad_result)
        assert not isinstance(good_result, Exception), good_result
        assert np.abs(good_result.pixels.astype(int) - reference(good).astype(int)).max() <= 1
        # both requests in one TorchServe batch, one latent in the model call: the bad one failed alone
        if good_result.batch_requests == 2 and good_result.batch_rows == 1:
            shared = True
            break
    assert shared, "the two requests never shared a TorchServe batch"


def health_status(channel) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def wait_for_health(channel, status: int, within_s: float) -> float:
    """Seconds until the service's overall health is `status`; fails after within_s."""
    t0 = time.monotonic()
    while health_status(channel) != status:
        assert time.monotonic() - t0 < within_s, f"health not {status} after {within_s} s"
        time.sleep(0.1)
    return time.monotonic() - t0


def test_the_generator_is_not_serving_until_torchserve_renders(mar, tiny_pack, tmp_path):
    """The generator service as its main() builds it with --backend torchserve, started before TorchServe
    (as a pod's containers start): NOT_SERVING, naming TorchServe, until TorchServe renders; the first call
    after SERVING works; NOT_SERVING again once TorchServe stops."""
    from grpc_health.v1 import health_pb2

    from services.common.redis_server import free_port
    from services.generator import server as generator
    from services.generator.torchserve_runner import Ports, TorchServe

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    ports = Ports.free(grpc_inference=free_port())
    svc = generator.create(generator.parser().parse_args([
        "--model-store", str(tiny_pack[1]), "--packs", "tiny", "--backend", "torchserve",
        "--torchserve-address", f"127.0.0.1:{ports.grpc_inference}"]), LOGGER)
    server, address = start_local(svc, LOGGER)
    ts = TorchServe(mar, tmp_path / "run", ports=ports)
    try:
        with grpc.insecure_channel(address) as channel:
            time.sleep(2.5)  # a few readiness checks without TorchServe
            assert health_status(channel) == not_serving
            assert any(r.startswith("torchserve: ") and "TorchServe at 127.0.0.1:" in r
                       for r in svc.readiness.reasons()), svc.readiness.reasons()
            ts.start()
            waited = wait_for_health(channel, serving, within_s=30)
            resp = generate(generator_pb2_grpc.GeneratorStub(channel), latents(2, seed=6))
            assert from_tensor(resp.pixels).shape == (2, 32, 32, 3)
            print(f"SERVING {waited:.1f} s after TorchServe's model was READY")
            ts.stop()
            wait_for_health(channel, not_serving, within_s=10)
    finally:
        ts.stop()
        server.stop(0).wait()
        svc.stop()


def test_a_torchserve_without_the_packs_model_fails_the_readiness_check(pack, torchserve):
    from services.generator.torchserve_backend import TorchServeGenerator

    gen = TorchServeGenerator(pack, torchserve.address, model_name="other-generator")
    try:
        with pytest.raises(FaceditError) as info:
            gen.check(10)
        assert info.value.status == "FAILED_PRECONDITION" and "'other-generator'" in str(info.value)
    finally:
        gen.close()
    gen = TorchServeGenerator(pack, torchserve.address)
    try:
        gen.check(10)  # a render
        gen.check(10)  # then a Ping
    finally:
        gen.close()


def test_stopped_torchserve_answers_unavailable(generator_stub, torchserve):
    torchserve.stop()
    with pytest.raises(grpc.RpcError) as info:
        generate(generator_stub, latents(1))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value.details()
    assert "TorchServe" in info.value.details()
