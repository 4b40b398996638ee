"""End to end: Redis and the four services as separate processes on free ports,
serving the committed synth pack; a rendered face is edited over gRPC and the
result is judged by the pack's attribute oracle (run here, in the test, on the
PNG that came back)."""
import io

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from services.client import FaceditClient
from services.common.pack import load_pack
from services.stack import Stack
from training import renderer

from .conftest import MODEL_STORE

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack.on_free_ports(MODEL_STORE, ["synth"], tmp_path_factory.mktemp("stack-logs"))
    s.start(timeout_s=90)
    yield s
    s.stop()
    assert all(code == 0 for code in s.exit_codes.values()), s.exit_codes  # graceful SIGTERM shutdown


@pytest.fixture(scope="module")
def oracle():
    pack = load_pack("synth", MODEL_STORE)
    sess = ort.InferenceSession(str(pack.artefact("classifier")), providers=["CPUExecutionProvider"])
    return lambda png: sess.run(None, {"pixels": np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))[None]})[0][0]


def png_of(pixels):
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_edit_of_a_rendered_face_moves_the_asked_attribute_and_keeps_the_other(stack, oracle):
    pack = load_pack("synth", MODEL_STORE)
    smile, age = pack.attributes.index("smile"), pack.attributes.index("age")
    faces = renderer.sample_faces(2024, 12)
    pixels = renderer.render(faces, size=pack.resolution)
    client = FaceditClient(stack.address("gateway"), timeout_s=30)
    try:
        up_moves, down_moves, kept_moves = [], [], []
        for face_png in (png_of(p) for p in pixels):
            up = client.edit(client.face(image=face_png), [("smile", 3.0)], keep=["age"], return_original=True)
            down = client.edit(client.face(latent_id=up.latent_id), [("smile", -3.0)], keep=["age"])
            before, after_up, after_down = oracle(up.original), oracle(up.image), oracle(down.image)
            up_moves.append(after_up[smile] - before[smile])
            down_moves.append(after_down[smile] - before[smile])
            kept_moves.append(abs(after_up[age] - before[age]))
            # the service's own quality figures agree with the oracle run here
            assert up.quality[0].score_after == pytest.approx(after_up[smile], abs=1e-4)
    finally:
        client.close()
    up_moves, down_moves, kept_moves = map(np.array, (up_moves, down_moves, kept_moves))
    assert (up_moves > 0).mean() >= 0.9, up_moves
    assert (down_moves < 0).mean() >= 0.9, down_moves
    assert up_moves.mean() > 0.2 and down_moves.mean() < -0.2, (up_moves, down_moves)
    assert kept_moves.mean() < 0.1, kept_moves


def test_every_service_answers_health_and_reflection(stack):
    import grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    for service in ("gateway", "encoder", "directions", "generator"):
        with grpc.insecure_channel(stack.address(service)) as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)
            responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                                  timeout=10)
            names = {s.name for r in responses for s in r.list_services_response.service}
            assert f"facedit.v1.{service.capitalize()}" in names and "grpc.health.v1.Health" in names


def test_bad_input_over_the_process_stack(stack):
    import grpc

    client = FaceditClient(stack.address("gateway"), timeout_s=30)
    try:
        with pytest.raises(grpc.RpcError) as err:
            client.edit(client.face(image=b"\x89PNG\r\n\x1a\n truncated"), [("smile", 1)])
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert client.edit(client.face(seed=5), [("smile", 1.0)]).image  # still serving
    finally:
        client.close()
