"""CRG directions: the shared maths (services.directions.reference) on synthetic latents
with known answers, the offline step on the tiny pack, the registry's custom directions
against a real Redis, and CreateDirection -> Edit over real gRPC on loopback."""
import json
import shutil

import grpc
import numpy as np
import pytest

from facedit.v1 import common_pb2, directions_pb2, directions_pb2_grpc
from facedit_core import images, records, reference
from facedit_core.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from facedit_core.pack import load_pack
from facedit_core.records import DirectionRecord
from facedit_core.reference import Gaussian
from services.common.redis_server import connect
from services.common.tensors import from_tensor
from services.directions import registry as registry_module
from services.directions.registry import Registry
from tests.support import ROOT
from training.config import PackConfig
from training.data import renderer
from training.methods import crg_directions, direction_sets

TINY = PackConfig.load(ROOT / "training/configs/tiny.json")
BAD = grpc.StatusCode.INVALID_ARGUMENT


def unit(v):
    v = np.asarray(v, np.float64)
    return v / np.linalg.norm(v)


def clouds(gap=3.0, sd_pos=1.0, sd_neg=1.0, n=4000, dim=32, seed=0):
    """Two Gaussian clouds N(0, sd_neg^2 I) and N(gap u, sd_pos^2 I) in `dim` dimensions; u known."""
    rng = np.random.default_rng(seed)
    axis = unit(rng.standard_normal(dim))
    neg = rng.standard_normal((n, dim)) * sd_neg
    pos = rng.standard_normal((n, dim)) * sd_pos + gap * axis
    return pos, neg, axis


# --------------------------------------------------------------------------- the maths

def test_direction_recovers_the_known_axis_of_two_clouds():
    pos, neg, axis = clouds()
    d, norm = reference.direction(pos, neg)
    assert d.dtype == np.float32 and np.linalg.norm(d) == pytest.approx(1, abs=1e-6)
    assert float(d @ axis) > 0.99
    assert norm == pytest.approx(3.0, abs=0.15)


def test_one_pair_is_eq3_and_many_pairs_average_the_differences():
    rng = np.random.default_rng(1)
    z_without, z_with = rng.standard_normal((2, 50, 16))
    d, _ = reference.direction(z_with[0], z_without[0])
    assert np.allclose(d, unit(z_with[0] - z_without[0]), atol=1e-6)  # (z_with - z_without) / |...|
    d, _ = reference.direction(z_with, z_without)
    assert np.allclose(d, unit((z_with - z_without).mean(axis=0)), atol=1e-6)
    singles = reference.pair_directions(z_with, z_without)
    assert np.allclose(np.linalg.norm(singles, axis=1), 1, atol=1e-5)
    assert np.allclose(singles[3], unit(z_with[3] - z_without[3]), atol=1e-6)


def test_projection_gaussians_are_in_strength_units():
    pos, neg, axis = clouds(gap=3.0, sd_pos=0.5, sd_neg=1.0)
    g_pos, g_neg = reference.projection_gaussians(pos, neg, axis)
    assert g_pos.mean == pytest.approx(3.0, abs=0.05) and g_pos.std == pytest.approx(0.5, abs=0.03)
    assert g_neg.mean == pytest.approx(0.0, abs=0.05) and g_neg.std == pytest.approx(1.0, abs=0.05)
    assert (g_pos.count, g_neg.count) == (4000, 4000)
    # moving by s along the unit direction moves every projection by exactly s
    moved = reference.project(neg + 2.0 * axis, axis)
    assert np.allclose(moved - reference.project(neg, axis), 2.0)


def test_strength_range_rule_gives_the_expected_numbers():
    rule = reference.strength_range
    # equal spreads: the gap both ways
    assert rule(Gaussian(3.0, 0.5, 10), Gaussian(0.0, 0.5, 10), 10) == pytest.approx((-3.0, 3.0))
    # wider negatives: adding is cut by 2 (sd_neg - sd_pos) = 1, removing keeps the gap
    assert rule(Gaussian(3.0, 0.5, 10), Gaussian(0.0, 1.0, 10), 10) == pytest.approx((-3.0, 2.0))
    # wider positives: the mirror image; here the cut (2 - 1.5) stops at half the gap (1)
    assert rule(Gaussian(1.0, 1.0, 10), Gaussian(-1.0, 0.25, 10), 10) == pytest.approx((-1.0, 2.0))
    assert rule(Gaussian(1.0, 0.5, 10), Gaussian(-1.0, 0.25, 10), 10) == pytest.approx((-1.5, 2.0))
    # capped by the hard limit; no range when the Gaussians are not in order
    assert rule(Gaussian(8.0, 0.5, 10), Gaussian(-4.0, 0.5, 10), 5) == pytest.approx((-5.0, 5.0))
    assert rule(Gaussian(0.0, 1.0, 10), Gaussian(0.5, 1.0, 10), 10) == (0.0, 0.0)
    # spreads so different that the bulk rule would leave nothing: half the gap remains
    assert rule(Gaussian(1.0, 0.1, 10), Gaussian(0.0, 2.0, 10), 10) == pytest.approx((-1.0, 0.5))


def test_describe_on_clouds_gives_range_separability_and_flat_metrics():
    pos, neg, axis = clouds(gap=3.0)
    d, _ = reference.direction(pos, neg)
    found = reference.describe(pos, neg, d, limit=10)
    assert found["strength_min"] == pytest.approx(-3.0, abs=0.15)
    assert found["strength_max"] == pytest.approx(3.0, abs=0.15)
    m = found["metrics"]
    assert m["midpoint_accuracy"] > 0.92  # Phi(1.5) = 0.933 for gap 3, sd 1
    assert m["d_prime"] == pytest.approx(3.0, abs=0.2)
    assert all(isinstance(v, float) and np.isfinite(v) for v in m.values())
    # far apart: perfectly separable
    pos, neg, _ = clouds(gap=12.0)
    assert reference.describe(pos, neg, reference.direction(pos, neg)[0], 10)["metrics"]["midpoint_accuracy"] == 1.0


def test_bad_reference_sets_and_names_are_refused():
    z = np.ones((3, 8))
    with pytest.raises(InvalidArgument, match="same mean latent"):
        reference.direction(z, z.copy())
    with pytest.raises(InvalidArgument, match="NaN"):
        reference.direction(np.full((1, 8), np.nan), z)
    with pytest.raises(InvalidArgument, match="length"):
        reference.direction(np.ones((1, 8)), np.ones((1, 9)))
    assert records.custom_id("my_smile-2") == "custom/my_smile-2"
    for name in ("", "My Smile", "a/b", "x" * 41, "smile!"):
        with pytest.raises(InvalidArgument, match="1 to 40 characters"):
            records.custom_id(name)



# --------------------------------------------------------------------------- offline step

def test_reference_pairs_are_true_counterfactuals():
    cfg = TINY.replace(crg_pairs=3)
    present, absent = crg_directions.reference_pairs(cfg, "eyeglasses")
    assert present.shape == absent.shape == (3, TINY.resolution, TINY.resolution, 3)
    changed = (present != absent).any(axis=-1).mean(axis=(1, 2))
    assert (changed > 0).all() and (changed < 0.5).all()  # only the glasses' pixels differ


def test_offline_step_on_the_tiny_pack(tiny_pack, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(tiny_pack[0], work)  # leave the session's pack alone
    figures = crg_directions.train(TINY, work)
    saved = json.loads((work / "directions" / "crg.json").read_text())
    vectors = np.load(work / "directions" / "crg.npy")
    assert [r["id"] for r in saved] == [f"crg/{a}" for a in renderer.ATTRIBUTES]
    assert vectors.shape == (len(renderer.ATTRIBUTES), TINY.latent_dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    for r in saved:
        assert all(k in r for k in direction_sets.REQUIRED) and r["method"] == "crg"
        assert r["strength_meaning"] == records.OFFSET_MEANING
        assert -r["strength_limit"] <= r["strength_min"] < 0 < r["strength_max"] <= r["strength_limit"]
        assert r["provenance"]["range_from"]
        m = r["metrics"]
        for key in ("positive_mean", "positive_std", "negative_mean", "negative_std", "midpoint_accuracy",
                    "single_pair_cosine", "pair_cosine_mean", "validation_accuracy"):
            assert np.isfinite(m[key]), key
        assert m["positive_std"] >= 0 and m["negative_std"] >= 0
        assert m["positive_count"] + m["negative_count"] == TINY.crg_eval_samples
        assert 0 <= m["midpoint_accuracy"] <= 1 and -1 <= m["single_pair_cosine"] <= 1
        assert r["provenance"]["pairs"] == TINY.crg_pairs
    report = json.loads((work / "report.json").read_text())["crg"]
    assert report["pairs"] == TINY.crg_pairs and set(report["attributes"]) == set(renderer.ATTRIBUTES)
    assert figures["attributes"]["eyeglasses"]["single_pair_direction"]["positive_std"] >= 0
    # the committed step is deterministic: the pack step wrote the same directions
    assert np.allclose(np.load(tiny_pack[0] / "directions" / "crg.npy"), vectors, atol=1e-6)


def test_offline_range_falls_back_to_the_reference_pairs_when_held_out_faces_do_not_separate(tiny_pack):
    from training.encoders import crg_encoder

    e = crg_encoder.load(TINY, tiny_pack[0])
    z = crg_directions.encode(e, renderer.render(renderer.sample_faces(3, 6), size=TINY.resolution))
    # the same faces labelled both ways: the held-out Gaussians coincide (gap 0)
    fit = crg_directions.fit_attribute(TINY, e, "eyeglasses", np.concatenate([z, z]),
                                       np.repeat([True, False], len(z)))
    assert fit["metrics"]["gap"] == pytest.approx(0, abs=1e-9) and fit["range_from"].startswith("reference pairs")
    assert fit["strength_min"] < 0 < fit["strength_max"]
    assert fit["metrics"]["pairs_positive_mean"] > fit["metrics"]["pairs_negative_mean"]


def test_the_exported_tiny_pack_carries_the_crg_directions(tiny_pack):
    pack = load_pack("tiny", tiny_pack[1])
    records = json.loads(pack.artefact("directions").read_text())
    crg = [r for r in records if r["method"] == "crg"]
    assert [r["attribute"] for r in crg] == list(renderer.ATTRIBUTES)
    assert "crg" in pack.manifest["methods"]


# --------------------------------------------------------------------------- registry (own Redis db)

@pytest.fixture()
def registry(redis_server):
    """A Registry on database 7 of the session's Redis (database 0 belongs to tiny_servers)."""
    client = connect(redis_server.url.rsplit("/", 1)[0] + "/7")
    client.flushdb()
    yield Registry(client)
    client.flushdb()


def custom_record(name="mine", **changes):
    rec = dict(id=f"custom/{name}", attribute=name, method="custom", strength_min=-1.0, strength_max=2.0,
               strength_limit=10.0, strength_meaning=reference.STRENGTH_MEANING, metrics={"gap": 2.0},
               provenance={"test": True})
    rec.update(changes)
    return DirectionRecord(**rec)


def test_registry_put_normalises_validates_and_limits(tiny_pack, registry, monkeypatch):
    pack = load_pack("tiny", tiny_pack[1])
    registry.publish(pack)
    info = registry.pack_info("tiny")
    stored = registry.put(info, custom_record(), np.arange(1, 17, dtype=np.float32))
    (rec, vec), = registry.get(info, ["custom/mine"])
    assert np.allclose(vec, unit(np.arange(1, 17)), atol=1e-6) and np.array_equal(vec, stored)
    assert rec == custom_record()
    with pytest.raises(InvalidArgument, match="already exists"):
        registry.put(info, custom_record(strength_max=3.0), np.ones(16))
    registry.put(info, custom_record(strength_max=3.0), np.ones(16), replace=True)
    assert registry.get(info, ["custom/mine"])[0][0].strength_max == 3.0
    for vector, match in ((np.ones(15), "expected \\(16,\\)"), (np.full(16, np.nan), "NaN"),
                          (np.zeros(16), "cannot be normalised"), (np.full(16, 1e-320), "cannot be normalised")):
        with pytest.raises(InvalidArgument, match=match):
            registry.put(info, custom_record("other"), vector)
    for record, match in ((custom_record(strength_min=-20.0), "strength_min"),
                          (custom_record(metrics={"x": float("inf")}), "finite"),
                          (custom_record(id="custom/"), "must be")):
        with pytest.raises(InvalidArgument, match=match):
            registry.put(info, record, np.ones(16))
    monkeypatch.setattr(registry_module, "MAX_CUSTOM_PER_VERSION", 3)
    registry.put(info, custom_record("two"), np.ones(16))
    registry.put(info, custom_record("three"), np.ones(16))
    with pytest.raises(ResourceExhausted, match="limit"):
        registry.put(info, custom_record("four"), np.ones(16))
    registry.put(info, custom_record("three"), -np.ones(16), replace=True)  # replacing is not a new one


def test_custom_directions_belong_to_the_version_active_when_created(tiny_pack, registry):
    pack = load_pack("tiny", tiny_pack[1])
    registry.publish(pack)
    info = registry.pack_info("tiny")
    registry.put(info, custom_record(), np.ones(16))
    registry.publish(pack)  # a restart re-publishes the same version: the custom direction stays
    assert "custom/mine" in registry.ids(registry.pack_info("tiny"))
    newer = type(pack)(**{**pack.__dict__, "version": pack.version + "-b"})
    registry.publish(newer)  # a switch hides it ...
    assert "custom/mine" not in registry.ids(registry.pack_info("tiny"))
    with pytest.raises(FailedPrecondition, match="switched"):  # ... and a put for the old version fails
        registry.put(info, custom_record("late"), np.ones(16))
    registry.publish(pack)  # switching back shows it again
    assert "custom/mine" in registry.ids(registry.pack_info("tiny"))


# --------------------------------------------------------------------------- over gRPC

def pngs(pixels):
    return [images.encode(p) for p in pixels]


def glasses_pngs(seed=11, n=4):
    faces = renderer.sample_faces(seed, n)
    present = renderer.render(renderer.with_attribute(faces, "eyeglasses", 1.0), size=32)
    absent = renderer.render(renderer.with_attribute(faces, "eyeglasses", 0.0), size=32)
    return pngs(present), pngs(absent)


def expect(code, fn, match):
    with pytest.raises(grpc.RpcError) as info:
        fn()
    assert info.value.code() == code, info.value.details()
    assert match in info.value.details(), info.value.details()


def test_create_direction_then_edit_with_it_at_once(client, tiny_servers):
    positive, negative = glasses_pngs()
    resp = client.create_direction("my_glasses", positive, negative, attribute="eyeglasses")
    d = resp.direction
    assert d.id == "custom/my_glasses" and d.method == common_pb2.METHOD_CUSTOM and d.attribute == "eyeglasses"
    assert d.pack.name == "tiny" and not d.vector.data
    assert d.strength_min < 0 < d.strength_max <= d.strength_limit == 10.0
    assert (resp.positive.count, resp.negative.count) == (4, 4)
    assert resp.positive.mean > resp.negative.mean  # the direction points from negatives to positives
    assert d.metrics["positive_mean"] == pytest.approx(resp.positive.mean)
    assert json.loads(d.provenance)["positive_images"] == 4

    # the stored vector is the normalised mean difference of the encoded images
    z_pos = np.stack([from_tensor(client.encode(p).latent) for p in positive])
    z_neg = np.stack([from_tensor(client.encode(p).latent) for p in negative])
    with grpc.insecure_channel(tiny_servers.addresses["directions"]) as ch:
        got = directions_pb2_grpc.DirectionsStub(ch).GetDirection(
            directions_pb2.GetDirectionRequest(pack="tiny", direction_id="custom/my_glasses"), timeout=10)
    assert float(from_tensor(got.vector) @ reference.direction(z_pos, z_neg)[0]) > 0.9999

    # usable at once, alone, with kept attributes, and listed
    edit = client.edit(client.face(seed=5), [("custom/my_glasses", 2.0)], return_original=True)
    assert edit.image and edit.image != edit.original
    q = edit.quality[0]
    assert q.direction_id == "custom/my_glasses" and q.method == common_pb2.METHOD_CUSTOM
    assert 0 <= q.score_after <= 1  # scored as eyeglasses, its label
    assert edit.latent_shift == pytest.approx(2.0, rel=1e-4)
    kept = client.edit(client.face(seed=5), [("custom/my_glasses", 2.0)], keep=["age"])
    assert 0 < kept.quality[0].projected_norm <= 1
    assert "custom/my_glasses" in {x.id for x in client.attributes().directions}


def test_one_reference_pair_is_enough_and_replace_overwrites(client):
    positive, negative = glasses_pngs(seed=12, n=1)
    resp = client.create_direction("one_pair", positive, negative)
    assert resp.direction.attribute == "one_pair"  # no label: the name
    assert (resp.positive.count, resp.positive.std, resp.negative.std) == (1, 0.0, 0.0)
    expect(BAD, lambda: client.create_direction("one_pair", positive, negative), "already exists")
    other_pos, other_neg = glasses_pngs(seed=13, n=2)
    again = client.create_direction("one_pair", other_pos, other_neg, replace=True)
    assert again.positive.count == 2
    assert client.edit(client.face(seed=1), [("custom/one_pair", 1.0)]).image


def test_crg_pack_directions_are_selectable_per_edit(client):
    resp = client.edit(client.face(seed=2), [("eyeglasses", 1.5)], keep=["age"], method="crg")
    assert resp.quality[0].direction_id == "crg/eyeglasses"


def test_bad_create_direction_input_is_invalid_argument(client):
    positive, negative = glasses_pngs(seed=14, n=2)
    create = client.create_direction
    cases = [
        (lambda: create("nothing", [], negative), "positive_images: give 1 to 32"),
        (lambda: create("nothing", positive, []), "negative_images: give 1 to 32"),
        (lambda: create("many", positive * 17, negative), "positive_images: give 1 to 32 image files, got 34"),
        (lambda: create("junk", positive, [negative[0], b"not an image"]), "negative_images[1]: not an image"),
        (lambda: create("cut", [positive[0][:60]], negative), "positive_images[0]: cannot decode"),
        (lambda: create("empty", [positive[0], b""], negative), "positive_images[1]: empty"),
        (lambda: create("Bad Name", positive, negative), "1 to 40 characters"),
        (lambda: create("x" * 41, positive, negative), "1 to 40 characters"),
        (lambda: create("", positive, negative), "1 to 40 characters"),
        (lambda: create("label", positive, negative, attribute="Eye Glasses"), "attribute 'Eye Glasses'"),
        (lambda: create("same", positive, positive), "encode to the same mean latent"),
        (lambda: create("nopack", positive, negative, pack="nope"), "unknown pack 'nope'"),
    ]
    for call, match in cases:
        expect(BAD, call, match)
    listed = {x.id for x in client.attributes().directions}
    assert not {"custom/nothing", "custom/many", "custom/junk", "custom/same"} & listed


def test_put_direction_refuses_what_is_not_a_custom_direction(tiny_servers):
    from services.common.tensors import to_tensor

    with grpc.insecure_channel(tiny_servers.addresses["directions"]) as ch:
        stub = directions_pb2_grpc.DirectionsStub(ch)

        def put(**fields):
            d = common_pb2.Direction(**{"id": "custom/x", "strength_min": -1, "strength_max": 1,
                                        "strength_limit": 10, "vector": to_tensor(np.ones(16, np.float32)),
                                        **fields})
            return stub.PutDirection(directions_pb2.PutDirectionRequest(pack="tiny", direction=d), timeout=10)

        expect(BAD, lambda: put(id="interfacegan/smile"), "custom directions are 'custom/<name>'")
        expect(BAD, lambda: put(method=common_pb2.METHOD_CRG), "custom directions only")
        expect(BAD, lambda: put(vector=to_tensor(np.ones(3, np.float32))), "expected (16,)")
        expect(BAD, lambda: put(provenance="{not json"), "provenance is not JSON")
        expect(grpc.StatusCode.FAILED_PRECONDITION,
               lambda: put(pack=common_pb2.PackRef(name="tiny", version="2000-01-01-old")), "active version is")
        stored = put(id="custom/direct")
        assert stored.id == "custom/direct" and stored.method == common_pb2.METHOD_CUSTOM


def test_client_cli_creates_a_direction(tiny_servers, tmp_path, capsys):
    from services.client import main

    positive, negative = glasses_pngs(seed=15, n=2)
    paths = []
    for i, data in enumerate(positive + negative):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(data)
    main(["--address", tiny_servers.addresses["gateway"], "create-direction",
          "--positive", str(paths[0]), "--positive", str(paths[1]),
          "--negative", str(paths[2]), "--negative", str(paths[3]), "--name", "cli_glasses"])
    out = capsys.readouterr().out
    assert "custom/cli_glasses in pack tiny" in out and "projections: positive" in out
