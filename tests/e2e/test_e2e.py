"""End to end: Redis and the four services as separate processes on free ports,
serving the committed synth pack; a rendered face is edited over gRPC and the
result is judged by the pack's attribute oracle (run here, in the test, on the
PNG that came back)."""
import io

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from facedit_core import images
from facedit_core.pack import load_pack
from services.client import FaceditClient
from services.stack import Stack
from tests.support import MODEL_STORE
from training.data import renderer

pytestmark = pytest.mark.e2e
_A = list(renderer.ATTRIBUTES)


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
    return images.encode(pixels)


def _edits(client, oracle, pixels, edit, keep):
    """Edit each face (PNG over the gateway); oracle probabilities before and after, (N, A) each."""
    before, after = [], []
    for face_png in (png_of(p) for p in pixels):
        resp = client.edit(client.face(image=face_png), [edit], keep=keep, return_original=True)
        before.append(oracle(resp.original))
        after.append(oracle(resp.image))
        # the service's own quality figures agree with the oracle run here
        assert resp.quality[0].score_after == pytest.approx(after[-1][_A.index(edit[0])], abs=1e-4)
    return np.array(before), np.array(after)


def test_edit_of_a_rendered_face_moves_the_asked_attribute_and_keeps_the_other(stack, oracle):
    """48 rendered faces without a beard get +3 beard, keeping age (correlated with beard in the
    data): the beard label flips, the age label stays, and keeping age measurably lowers
    how much age moves compared with the same edit without keep."""
    beard, age = _A.index("beard"), _A.index("age")
    client = FaceditClient(stack.address("gateway"), timeout_s=30)
    try:
        beardless = renderer.render(renderer.with_attribute(renderer.sample_faces(2024, 48), "beard", 0.0), size=32)
        b, a = _edits(client, oracle, beardless, ("beard", 3.0), ["age"])
        _, a_free = _edits(client, oracle, beardless, ("beard", 3.0), [])
        bearded = renderer.render(renderer.with_attribute(renderer.sample_faces(2024, 48), "beard", 1.0), size=32)
        b_down, a_down = _edits(client, oracle, bearded, ("beard", -3.0), ["age"])
    finally:
        client.close()
    assert (b[:, beard] < 0.5).mean() >= 0.9  # the encoder kept "no beard"
    assert (a[:, beard] > 0.5).mean() >= 0.9, a[:, beard]  # edited the asked way
    assert (a_down[:, beard] < 0.5).mean() >= 0.9, a_down[:, beard]
    assert ((a[:, age] > 0.5) == (b[:, age] > 0.5)).mean() >= 0.9, (b[:, age], a[:, age])  # kept
    kept_shift, free_shift = np.abs(a[:, age] - b[:, age]).mean(), np.abs(a_free[:, age] - b[:, age]).mean()
    assert kept_shift < 0.1 and kept_shift < free_shift, (kept_shift, free_shift)


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


def test_demo_rows_of_the_words_and_istrc_methods(stack):
    """make run's demo adds a phrase row and an ISTRC row for packs with these methods: five
    PNGs each, over the method's recommended range, and the ends differ from the middle."""
    import json

    from services.stack import DEMO_FRACTIONS, _method_rows

    client = FaceditClient(stack.address("gateway"), timeout_s=60)
    try:
        manifest = json.loads((MODEL_STORE / "synth" / "manifest.json").read_text())
        rows = _method_rows(client, client.attributes(), manifest, "synth", "smile")
    finally:
        client.close()
    assert [label.split(":")[1].split()[0] for label, _ in rows] == ["text", "ISTRC"]
    for label, pngs in rows:
        assert len(pngs) == len(DEMO_FRACTIONS) and all(p.startswith(b"\x89PNG") for p in pngs), label
        pixels = [np.asarray(Image.open(io.BytesIO(p)).convert("RGB"), np.float32) for p in pngs]
        assert np.abs(pixels[0] - pixels[2]).mean() > 1 and np.abs(pixels[-1] - pixels[2]).mean() > 1, label
