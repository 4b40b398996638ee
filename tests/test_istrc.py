"""ISTRC on the tiny pack: the training step's artefacts and figures, the exported models against
PyTorch, and the RPCs through the real gRPC servers of conftest (Edit with METHOD_ISTRC, Blend,
Arithmetic, the encoder's embedding RPCs) with their INVALID_ARGUMENT errors."""
import io
import json
import shutil

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from facedit.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc, gateway_pb2
from services.common import images
from services.common.pack import load_pack, sha256
from services.common.tensors import from_tensor, to_tensor
from services.encoder.istrc import ARTEFACTS
from training import istrc, renderer
from training.config import PackConfig
from training.third_party import FACENET

from .conftest import ROOT

TINY = PackConfig.load(ROOT / "training/configs/tiny.json")
BAD = grpc.StatusCode.INVALID_ARGUMENT


def expect(code, fn, match):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    assert info.value.code() == code, info.value.details()
    assert match in info.value.details(), info.value.details()


def pixels_of(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def encoder_stub(tiny_servers):
    with grpc.insecure_channel(tiny_servers.addresses["encoder"]) as ch:
        yield encoder_pb2_grpc.EncoderStub(ch)


# -- training and export --------------------------------------------------------

def test_tiny_pack_has_istrc_artefacts_and_references_facenet(tiny_pack):
    work, store = tiny_pack
    pack = load_pack("tiny", store)
    assert "istrc" in pack.manifest["methods"]
    entry = pack.manifest["artefacts"]["facenet"]
    assert entry["path"] == f"../third_party/{FACENET}"
    assert entry["sha256"] == sha256(pack.artefact("facenet"))  # artefact() checks it too
    meta = json.loads(pack.artefact("istrc").read_text())
    weights = np.load(pack.artefact("istrc_classifiers"), allow_pickle=False)
    assert meta["attributes"] == list(renderer.ATTRIBUTES) and weights.shape == (len(renderer.ATTRIBUTES), 512)
    assert meta["strength_min"] == -TINY.istrc_strength and meta["strength_limit"] == TINY.istrc_strength_limit
    figures = json.loads((work / "report.json").read_text())["istrc"]
    rec = figures["reconstruction"]
    assert -1 <= rec["embedding_cosine"] <= 1 and 0 <= rec["pixel_mae"] <= 1
    for a in renderer.ATTRIBUTES:
        assert 0 <= figures["classifiers"][a]["validation_accuracy"] <= 1
        row = figures["edits"][a][f"{TINY.istrc_strength:g}"]
        assert 0 <= row["success"] <= 1 and 0 <= row["leakage"] <= 1 and row["identity_distance"] >= 0
        assert row["arc_mean"] == pytest.approx(TINY.istrc_strength, abs=0.05)  # strength = radians walked
    assert "## ISTRC" in (store / "tiny" / "model_card.md").read_text()


def test_exported_mapping_matches_pytorch_and_edit_hook_runs(tiny_pack):
    work, store = tiny_pack
    model = istrc.Istrc.load(TINY, work)
    e = np.random.default_rng(0).standard_normal((5, 512)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    sess = ort.InferenceSession(str(store / "tiny" / "istrc_mapping.onnx"), providers=["CPUExecutionProvider"])
    assert np.allclose(sess.run(None, {"embedding": e})[0], model.to_latent(e), atol=1e-4)
    z = np.random.default_rng(1).standard_normal((2, TINY.latent_dim)).astype(np.float32)
    out = model.edit(z, "smile", 0.3, keep=("age",))
    assert out.shape == z.shape and np.isfinite(out).all()
    with torch.no_grad():
        assert torch.is_tensor(model.mapping(torch.from_numpy(e)))


# -- serving ---------------------------------------------------------------------

def test_encoder_embeds_images_like_training(tiny_pack, encoder_stub):
    work, _ = tiny_pack
    pixels = renderer.render(renderer.sample_faces(3, 3), size=32)
    resp = encoder_stub.EmbedImages(encoder_pb2.EncodeImagesRequest(pack="tiny", pixels=to_tensor(pixels)),
                                    timeout=60)
    e = from_tensor(resp.embeddings)
    assert e.shape == (3, 512) and np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    assert np.allclose(e, istrc.embed(pixels, "torch"), atol=1e-4)  # ONNX at serving == the PyTorch port
    assert np.allclose(from_tensor(resp.latents), istrc.Istrc.load(TINY, work).to_latent(e), atol=1e-4)


def test_istrc_edit_moves_the_classifier_logit_the_asked_way(encoder_stub):
    e = from_tensor(encoder_stub.EmbedImages(encoder_pb2.EncodeImagesRequest(
        pack="tiny", pixels=to_tensor(renderer.render(renderer.sample_faces(5, 1), size=32))), timeout=60).embeddings)
    for strength in (0.6, -0.6):
        resp = encoder_stub.IstrcEdit(encoder_pb2.IstrcEditRequest(
            pack="tiny", embedding=to_tensor(e[0]), edits=[common_pb2.EditOp(attribute="beard", strength=strength)]),
            timeout=30)
        d, = resp.edits
        assert (d.logit_after - d.logit_before) * strength > 0, (strength, d)
        assert d.steps == round(0.6 / TINY.istrc_step) and d.arc == pytest.approx(0.6, abs=0.01)
        both = from_tensor(resp.embeddings)
        assert np.allclose(both[0], e[0], atol=1e-6) and np.linalg.norm(both[1]) == pytest.approx(1, abs=1e-5)


def test_gateway_edit_with_method_istrc(client):
    resp = client.edit(client.face(seed=3), [("smile", 0.8)], keep=["age"], method="istrc", return_original=True)
    assert Image.open(io.BytesIO(resp.image)).size == (32, 32) and resp.original
    q, = resp.quality
    assert q.direction_id == "istrc/smile" and q.method == common_pb2.METHOD_ISTRC and q.strength == pytest.approx(0.8)
    assert q.strength_min == -TINY.istrc_strength and 0 <= q.score_after <= 1
    assert resp.latent_shift > 0 and resp.latent_id
    # the same edit by direction id, and a latent id as the face, give the same picture
    again = client.edit(client.face(latent_id=resp.latent_id), [("istrc/smile", 0.8)], keep=["age"])
    assert again.image == resp.image
    # skip_scores: the same picture, no scores, no original
    lean = client.edit(client.face(seed=3), [("smile", 0.8)], keep=["age"], method="istrc", skip_scores=True)
    assert lean.image == resp.image and not lean.original and not lean.scores_after
    assert np.isnan(lean.quality[0].score_after) and lean.quality[0].direction_id == "istrc/smile"


def test_blend_ends_are_the_faces_and_the_middle_is_between(client):
    faces = [client.face(seed=11), client.face(seed=12)]
    ends = [client.blend(faces, t=t, return_inputs=True) for t in (0.0, 1.0)]
    for k, resp in enumerate(ends):
        assert len(resp.inputs) == 2 and resp.angles[k] == pytest.approx(0, abs=1e-3)
        assert np.abs(pixels_of(resp.image) - pixels_of(resp.inputs[k])).max() <= 1
    mid = client.blend(faces, t=0.5)
    assert mid.angles[0] == pytest.approx(mid.angles[1], abs=1e-3) and mid.angles[0] > 0
    # 3 faces with weights: the spherical weighted mean, closest to the heaviest face
    mean = client.blend([*faces, client.face(seed=13)], weights=[1, 1, 6])
    assert mean.angles[2] < min(mean.angles[0], mean.angles[1])
    # an image file as a face, and the result's latent id is usable by Edit
    png = images.encode(renderer.render(renderer.sample_faces(2, 1), size=32)[0])
    mixed = client.blend([client.face(image=png), faces[0]])
    assert client.edit(client.face(latent_id=mixed.latent_id), [("yaw", 0.5)], method="istrc").image


def test_arithmetic_identities_through_the_stack(client):
    a, b = client.face(seed=21), client.face(seed=22)
    resp = client.arithmetic(a, b, b, return_inputs=True)  # a - b + b = a
    assert resp.angles[0] == pytest.approx(0, abs=1e-3) and len(resp.inputs) == 3
    assert client.arithmetic(a, b, client.face(seed=23), linear=True).image


def test_istrc_errors_are_invalid_argument_with_clear_text(client):
    two = [client.face(seed=1), client.face(seed=2)]
    expect(BAD, lambda: client.blend(two, t=1.5), "t must be in [0, 1]")
    expect(BAD, lambda: client.blend(two, t=float("nan")), "t must be in [0, 1]")
    expect(BAD, lambda: client.blend(two[:1]), "give 2 to 16 faces")
    expect(BAD, lambda: client.blend([client.face(seed=i) for i in range(17)]), "give 2 to 16 faces")
    expect(BAD, lambda: client.blend([*two, client.face(seed=3)], t=0.5), "exactly two faces")
    expect(BAD, lambda: client.blend(two, weights=[1, -1]), "weights")
    expect(BAD, lambda: client.blend(two, weights=[1]), "one per face")
    expect(BAD, lambda: client.stub.Arithmetic(gateway_pb2.ArithmeticRequest(a=two[0], b=two[1]), timeout=20),
           "c: give a face")
    expect(BAD, lambda: client.edit(client.face(seed=1), [("smile", 9.0)], method="istrc"), "outside the allowed range")
    expect(BAD, lambda: client.edit(client.face(seed=1), [("moustache", 1.0)], method="istrc"), "unknown attribute")
    expect(BAD, lambda: client.edit(client.face(seed=1), [("smile", 1.0)], keep=["smile"], method="istrc"),
           "cannot both edit and keep")
    mixed = gateway_pb2.EditRequest(face=client.face(seed=1), edits=[
        common_pb2.EditOp(attribute="smile", strength=1, method=common_pb2.METHOD_ISTRC),
        common_pb2.EditOp(attribute="age", strength=1)])
    expect(BAD, lambda: client.stub.Edit(mixed, timeout=20), "without edits of other methods")
    assert client.blend(two).image  # still serving


def test_a_pack_without_istrc_names_its_methods(tiny_pack, tmp_path):
    """The same tiny pack with the ISTRC artefacts taken out of its manifest, behind a whole
    stack of its own: ISTRC requests fail with the methods the pack has."""
    from services.client import FaceditClient
    from services.common.redis_server import EmbeddedRedis

    from .conftest import _Servers

    _, store = tiny_pack
    plain = tmp_path / "store" / "tiny"
    shutil.copytree(store / "tiny", plain)
    manifest = json.loads((plain / "manifest.json").read_text())
    for name in ARTEFACTS:
        del manifest["artefacts"][name]
    manifest["methods"].remove("istrc")
    (plain / "manifest.json").write_text(json.dumps(manifest))
    redis = EmbeddedRedis(workdir=str(tmp_path / "redis")).start()
    servers = _Servers(plain.parent, "tiny", redis.url)
    c = FaceditClient(servers.addresses["gateway"], timeout_s=20)
    try:
        methods = ", ".join(manifest["methods"])
        expect(BAD, lambda: c.edit(c.face(seed=1), [("smile", 1.0)], method="istrc"),
               f"pack tiny has no ISTRC models (its methods: {methods})")
        expect(BAD, lambda: c.blend([c.face(seed=1), c.face(seed=2)]), "has no ISTRC models")
        assert c.edit(c.face(seed=1), [("smile", 1.0)]).image  # the other methods still work
    finally:
        c.close()
        servers.stop()
        redis.stop()
