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

from facedit.v1 import common_pb2, directions_pb2, directions_pb2_grpc, encoder_pb2, encoder_pb2_grpc, gateway_pb2
from facedit_core import images, istrc_directions
from facedit_core.pack import load_pack, sha256
from services.common.tensors import from_tensor, to_tensor
from services.directions.registry import Registry
from services.encoder.istrc import ARTEFACTS
from tests.support import ROOT
from training.config import PackConfig
from training.data import renderer
from training.methods import istrc
from training.third_party.wheels import FACENET

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
    from tests.support import Servers

    _, store = tiny_pack
    shutil.copytree(store, tmp_path / "store")  # with ../third_party: the services check every artefact they read
    plain = tmp_path / "store" / "tiny"
    manifest = json.loads((plain / "manifest.json").read_text())
    for name in ARTEFACTS:
        del manifest["artefacts"][name]
    manifest["methods"].remove("istrc")
    (plain / "manifest.json").write_text(json.dumps(manifest))
    redis = EmbeddedRedis(workdir=str(tmp_path / "redis")).start()
    servers = Servers(plain.parent, "tiny", redis.url)
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


# -- ISTRC directions in the registry ----------------------------------------------

def _pack_classifiers(pack):
    meta = json.loads(pack.artefact("istrc").read_text())
    return meta, np.load(pack.artefact("istrc_classifiers"), allow_pickle=False).astype(np.float64)


def test_istrc_directions_are_registry_records_in_embedding_space(tiny_pack, redis_client):
    """Published from the pack's istrc.json + istrc_classifiers.npy (directions.json has none):
    unit w/|w| in the 512-d FaceNet space, with |w| and b to give back the classifier's logit."""
    _, store = tiny_pack
    pack = load_pack("tiny", store)
    assert not any(r["id"].startswith("istrc/") for r in json.loads(pack.artefact("directions").read_text()))
    registry = Registry(redis_client)
    registry.publish(pack)
    info = registry.pack_info("tiny")
    meta, w = _pack_classifiers(pack)
    records = {r.id: r for r in registry.list(info)}
    assert {i for i in records if i.startswith("istrc/")} == {f"istrc/{a}" for a in meta["attributes"]}
    assert all(r.space == "latent" and r.dim == TINY.latent_dim for i, r in records.items()
               if not i.startswith("istrc/"))
    e = np.random.default_rng(0).standard_normal(512)
    e /= np.linalg.norm(e)
    for i, a in enumerate(meta["attributes"]):
        (rec, vec), = registry.get(info, [f"istrc/{a}"])
        assert rec.method == "istrc" and rec.attribute == a and rec.space == "facenet" and rec.dim == 512
        assert vec.shape == (512,) and np.allclose(vec, w[i] / np.linalg.norm(w[i]), atol=1e-6)
        assert (rec.strength_min, rec.strength_max, rec.strength_limit) == (
            meta["strength_min"], meta["strength_max"], meta["strength_limit"])
        assert rec.strength_meaning == meta["strength_meaning"] and "radians" in rec.strength_meaning
        assert 0 <= rec.metrics["validation_accuracy"] <= 1 and rec.metrics["step"] == TINY.istrc_step
        assert istrc_directions.logit(vec, rec.metrics, e) == pytest.approx(w[i] @ e + meta["biases"][i], abs=1e-4)
        assert "istrc_classifiers.npy" in rec.provenance["source"] and rec.provenance["labels"]


def test_list_attributes_shows_istrc_directions_with_their_space(client):
    info = client.attributes()
    by_id = {d.id: d for d in info.directions}
    smile = by_id["istrc/smile"]
    assert smile.method == common_pb2.METHOD_ISTRC and smile.space == "facenet" and smile.dim == 512
    assert smile.strength_limit == TINY.istrc_strength_limit and "validation_accuracy" in smile.metrics
    assert json.loads(smile.provenance)["method"].startswith("ISTRC")
    assert by_id["interfacegan/smile"].space == "latent" and by_id["interfacegan/smile"].dim == TINY.latent_dim


def test_latent_compose_refuses_istrc_directions(tiny_servers, client):
    with grpc.insecure_channel(tiny_servers.addresses["directions"]) as ch:
        stub = directions_pb2_grpc.DirectionsStub(ch)
        for op in (common_pb2.EditOp(direction_id="istrc/smile", strength=0.2),
                   common_pb2.EditOp(attribute="smile", strength=0.2, method=common_pb2.METHOD_ISTRC)):
            expect(BAD, lambda: stub.Compose(directions_pb2.ComposeRequest(pack="tiny", edits=[op]), timeout=10),
                   "cannot be composed into a latent edit")
        # and the ISTRC resolver refuses latent directions
        expect(BAD, lambda: stub.ResolveIstrc(directions_pb2.ComposeRequest(pack="tiny", edits=[
            common_pb2.EditOp(direction_id="interfacegan/smile", strength=1)]), timeout=10), "move the latent")
    # a sweep is a latent edit: an ISTRC direction gets the same clear error through the gateway
    expect(BAD, lambda: list(client.sweep(client.face(seed=1), "istrc/smile", -0.2, 0.2, 3)),
           "cannot be composed into a latent edit")


def test_encoder_walks_the_directions_it_is_given(tiny_pack, encoder_stub):
    """IstrcEdit with the registry's directions equals the pack-file fallback for the same
    direction; another vector under the same name walks elsewhere; a latent direction is refused."""
    _, store = tiny_pack
    pack = load_pack("tiny", store)
    meta, w = _pack_classifiers(pack)
    e = from_tensor(encoder_stub.EmbedImages(encoder_pb2.EncodeImagesRequest(
        pack="tiny", pixels=to_tensor(renderer.render(renderer.sample_faces(6, 1), size=32))), timeout=60).embeddings)[0]
    (rec, vec), = [(r, v) for r, v in istrc_directions.records(pack) if r["attribute"] == "smile"]

    def direction(vector, attribute="smile"):
        return common_pb2.Direction(id=f"istrc/{attribute}", attribute=attribute, method=common_pb2.METHOD_ISTRC,
                                    vector=to_tensor(np.asarray(vector, np.float32)), space="facenet", dim=512,
                                    strength_min=rec["strength_min"], strength_max=rec["strength_max"],
                                    strength_limit=rec["strength_limit"], metrics=rec["metrics"])

    op = common_pb2.EditOp(attribute="smile", strength=0.5)
    fallback = encoder_stub.IstrcEdit(encoder_pb2.IstrcEditRequest(
        pack="tiny", embedding=to_tensor(e), edits=[op], keep=["age"]), timeout=30)
    age = meta["attributes"].index("age")
    given = encoder_stub.IstrcEdit(encoder_pb2.IstrcEditRequest(
        pack="tiny", embedding=to_tensor(e), edits=[op], directions=[direction(vec)],
        keep_directions=[direction(w[age] / np.linalg.norm(w[age]), "age")]), timeout=30)
    assert np.allclose(from_tensor(given.embeddings), from_tensor(fallback.embeddings), atol=1e-5)
    assert given.edits[0].logit_before == pytest.approx(fallback.edits[0].logit_before, abs=1e-4)
    assert given.edits[0].direction_id == "istrc/smile"
    other = encoder_stub.IstrcEdit(encoder_pb2.IstrcEditRequest(
        pack="tiny", embedding=to_tensor(e), edits=[op], directions=[direction(-vec)]), timeout=30)
    moved = from_tensor(other.embeddings)[1]
    assert moved @ vec < e @ vec < from_tensor(given.embeddings)[1] @ vec  # the given vector is walked
    latent = common_pb2.Direction(id="interfacegan/smile", attribute="smile", space="latent", dim=TINY.latent_dim,
                                  vector=to_tensor(np.ones(TINY.latent_dim, np.float32)), strength_limit=10)
    expect(BAD, lambda: encoder_stub.IstrcEdit(encoder_pb2.IstrcEditRequest(
        pack="tiny", embedding=to_tensor(e), edits=[op], directions=[latent]), timeout=30), "space 'latent'")


def test_gateway_istrc_edit_uses_the_registrys_direction(tiny_pack, tiny_servers, client):
    """Overwrite istrc/smile's vector in Redis with istrc/beard's: the gateway's smile edit becomes
    the beard edit (the vector comes from the registry, not the encoder's pack files)."""
    _, store = tiny_pack
    pack = load_pack("tiny", store)
    registry = Registry(tiny_servers.redis_client)
    info = registry.pack_info("tiny")
    face = client.face(seed=5)
    smile = client.edit(face, [("smile", 0.5)], method="istrc")
    beard = client.edit(face, [("beard", 0.5)], method="istrc")
    assert smile.image != beard.image
    (_, beard_vec), = registry.get(info, ["istrc/beard"])
    try:
        r = tiny_servers.redis_client
        r.hset(f"facedit:pack:tiny:{info.version}:vec", "istrc/smile", beard_vec.astype("<f4").tobytes())
        r.set("facedit:pack:tiny:stamp", "test-overwrite")  # every writer replaces the stamp
        swapped = client.edit(face, [("smile", 0.5)], method="istrc")
        assert swapped.image == beard.image and swapped.quality[0].direction_id == "istrc/smile"
    finally:
        registry.publish(pack)
    assert client.edit(face, [("smile", 0.5)], method="istrc").image == smile.image


def test_create_direction_with_method_istrc_is_walked_on_the_sphere(tiny_servers, client, encoder_stub):
    """CreateDirection(method ISTRC): the normalised mean FaceNet embedding of the positives minus the
    negatives, stored in the registry as custom/<name> in the facenet space, usable at once by Edit
    (which routes it to ISTRC), refused in a latent edit."""
    faces = renderer.sample_faces(41, 4)
    pos = renderer.render(renderer.with_attribute(faces, "beard", 1.0), size=32)
    neg = renderer.render(renderer.with_attribute(faces, "beard", 0.0), size=32)
    resp = client.create_direction("istrc_beard", [images.encode(p) for p in pos], [images.encode(p) for p in neg],
                                   attribute="beard", replace=True, method="istrc")
    d = resp.direction
    assert d.id == "custom/istrc_beard" and d.method == common_pb2.METHOD_CUSTOM and d.space == "facenet"
    assert d.dim == 512 and d.strength_limit == TINY.istrc_strength_limit and "radians" in d.strength_meaning
    assert resp.positive.count == 4 and resp.negative.count == 4 and resp.positive.mean > resp.negative.mean
    assert json.loads(d.provenance)["method"].startswith("ISTRC")

    def embed(pixels):
        return from_tensor(encoder_stub.EmbedImages(encoder_pb2.EncodeImagesRequest(
            pack="tiny", images=[images.encode(p) for p in pixels]), timeout=60).embeddings).astype(np.float64)

    expected = embed(pos).mean(0) - embed(neg).mean(0)
    with grpc.insecure_channel(tiny_servers.addresses["directions"]) as ch:
        stub = directions_pb2_grpc.DirectionsStub(ch)
        stored = stub.GetDirection(directions_pb2.GetDirectionRequest(pack="tiny", direction_id=d.id), timeout=10)
        assert np.allclose(from_tensor(stored.vector), expected / np.linalg.norm(expected), atol=1e-5)
        expect(BAD, lambda: stub.Compose(directions_pb2.ComposeRequest(pack="tiny", edits=[
            common_pb2.EditOp(direction_id=d.id, strength=0.2)]), timeout=10), "cannot be composed")
    assert d.id in {x.id for x in client.attributes().directions}
    face = client.face(seed=9)
    edited = client.edit(face, [(d.id, 0.6)], keep=["age"], return_original=True)
    q, = edited.quality
    assert q.direction_id == d.id and q.method == common_pb2.METHOD_ISTRC and edited.image != edited.original
    # a latent edit cannot share the request
    expect(BAD, lambda: client.edit(face, [(d.id, 0.6), ("interfacegan/age", 1.0)]), "without edits of other methods")


def test_mlp_classifiers_are_walked_along_their_changing_gradient(tiny_pack):
    """istrc_mlp_layers > 0: the paper's MLP classifiers beside the logistic ones; the walk takes
    their autograd gradient at every step (services.common.sphere.walk with a gradient function)."""
    work, _ = tiny_pack
    figures = json.loads((work / "report.json").read_text())["istrc"]["mlp_classifiers"]
    assert set(figures) == set(renderer.ATTRIBUTES)
    assert all(0 <= f["validation_accuracy"] <= 1 and f["layers"] == TINY.istrc_mlp_layers for f in figures.values())
    model = istrc.Istrc.load(TINY, work, "mlp")
    rng = np.random.default_rng(3)
    e, v = rng.standard_normal((2, 512))
    e /= np.linalg.norm(e)
    i = model.attributes.index("smile")

    def logit(x):
        with torch.no_grad():
            return float(model.mlp(torch.tensor(np.asarray(x, np.float32)[None]))[0, i])

    g = model.mlp.gradient(i, e)
    h = 1e-2
    assert (logit(e + h * v) - logit(e - h * v)) / (2 * h) == pytest.approx(g @ v, rel=0.05, abs=1e-4)
    far = model.walk(e, "smile", 1.0)
    assert not np.allclose(model.mlp.gradient(i, far), g)  # not a constant direction
    for s in (0.1, -0.1):  # small walks move the MLP logit the asked way
        assert (logit(model.walk(e, "smile", s)) - logit(e)) * s > 0
    kept = model.walk(e, "smile", 0.1, ("age",))
    assert abs(logit(kept) - logit(e)) > 0 and np.linalg.norm(kept) == pytest.approx(1, abs=1e-9)
