"""The real-face evaluation end to end on the committed digiface64 pack and one real photo that ships
with a dependency (skimage's astronaut), without `make real-faces`: the pipeline runs, the fast
inversion is the pack's encoder, another inversion plugs in, a zero edit returns the photo unchanged."""
import numpy as np
import pytest

from facedit_core.pack import load_pack
from facedit_faces.detect import FaceDetector
from tests.support import MODEL_STORE
from training.evaluation import real_faces as rf
from training.evaluation import real_faces_report as report
from training.third_party.wheels import DEFAULT_DIR


@pytest.fixture(scope="module")
def setup():
    from skimage import data

    models = rf.PackModels(load_pack("digiface64", MODEL_STORE))
    det = FaceDetector(folder=DEFAULT_DIR)
    photo = data.astronaut()
    entry = {"file": "scikit-image/astronaut.png", "split": "held-out", "status": "public-domain",
             "package": "scikit-image", "faces_when_added": 1}
    return models, det, [rf.Photo(entry, photo, rf.find_faces(det, photo, 0, models.template, models.resolution))]


def test_fast_mode_on_a_real_photo(setup):
    models, det, photos = setup
    method = models.pack.default_method  # the contact sheets show its edits
    result = rf.evaluate(models, rf.INVERSIONS["fast"](models), photos, det, methods=(method,))
    face = result["faces"][0]
    assert len(result["faces"]) == 1 and 0 < face["mae"] < 0.5 and 0 < face["dhash"] <= 1
    assert -1 <= face["facenet_cosine"] < face["facenet_cosine_resolution"] <= 1
    assert set(face["edits"]) == {f"{method}/{a} {s}" for a in models.attributes for s in "+-"}
    assert all(e["identity_cosine"] is None or -1 <= e["identity_cosine"] <= 1 for e in face["edits"].values())
    assert all(0 <= e["upper_lip_darkening"] <= 1 for e in face["edits"].values())
    assert set(result["sheet"]["edits"]) == {(a, s) for a in models.attributes for s in "+-"}
    agg = report.aggregate(result, "held-out")
    assert agg["faces"] == 1 and set(agg["edits"]) == {f"{method}/{a}" for a in models.attributes}


def test_another_inversion_plugs_in(setup):
    """An "inversion" that returns the aligned faces themselves reconstructs perfectly."""
    models, det, photos = setup

    def perfect(m):
        return rf.Inversion("perfect", lambda faces: (m.encode(faces), faces.copy()),
                            lambda z, rows: m.generate(z))
    result = rf.evaluate(models, perfect(models), photos, det, methods=("crg",))
    face = result["faces"][0]
    assert face["mae"] == 0 and face["dhash"] == face["phash"] == face["whash"] == 1.0
    assert face["facenet_cosine"] == pytest.approx(1.0, abs=1e-5)


def test_a_zero_edit_in_delta_mode_returns_the_photo_unchanged(setup):
    models, _, photos = setup
    p = photos[0]
    rendered = models.generate(models.encode(np.stack([f.crop for f in p.faces])))
    assert np.array_equal(rf.paste_faces(p.pixels, p.faces, rendered, rendered, "delta"), p.pixels)
    assert not np.array_equal(rf.paste_faces(p.pixels, p.faces, rendered, rendered, "replace"), p.pixels)


def test_faithful_inversion_beats_the_encoder_alone_on_a_held_out_real_face(setup):
    """Grace Hopper's portrait (matplotlib's sample data, in the held-out split: never used to tune the
    inversion): the faithful inversion's reconstruction is closer in pixels, in every hash and in FaceNet
    identity than the encoder's, and reaches issue 16's identity target."""
    import hashlib

    import matplotlib.cbook
    from PIL import Image

    from training.third_party import real_faces

    models, det, _ = setup
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    if real_faces.split_of(digest) != "held-out":
        pytest.skip(f"this matplotlib ships another grace_hopper.jpg (sha256 {digest[:12]}...), not the held-out one")
    photo = np.asarray(Image.open(path).convert("RGB"))
    entry = {"file": "matplotlib/grace_hopper.jpg", "split": "held-out", "status": "public-domain",
             "package": "matplotlib", "faces_when_added": 1}
    photos = [rf.Photo(entry, photo, rf.find_faces(det, photo, 0, models.template, models.resolution))]
    fast, faithful = (rf.evaluate(models, rf.INVERSIONS[name](models), photos, det, methods=())["faces"][0]
                      for name in ("fast", "faithful"))
    print({k: (fast[k], faithful[k]) for k in ("mae", "dhash", "phash", "whash", "facenet_cosine")})
    assert faithful["mae"] < 0.8 * fast["mae"]
    assert all(faithful[h] >= fast[h] for h in ("dhash", "phash", "whash"))
    assert faithful["facenet_cosine"] >= max(0.85, fast["facenet_cosine"] + 0.2)


def test_the_strength_curve_scales_the_recommended_strength_and_skin_tone_costs_identity_with_it(setup):
    """training/evaluation/strength_curve.py on the astronaut (fast inversion): each row is the same
    direction at a fraction of its recommended strength; a quarter of the skin-tone edit keeps her
    more herself (FaceNet) than the whole one; an unknown direction is refused with the known ones."""
    from training.evaluation import strength_curve

    models, det, photos = setup
    record = next(r for r, _ in models.directions if r.id == "refined/skin_tone")
    curve = strength_curve.run(models, photos, det, "refined/skin_tone", [0.25, 1.0], "held-out", "fast")
    assert list(curve) == [0.25, 1.0]
    for f, row in curve.items():
        assert row["+"]["strength"] == pytest.approx(f * record.strength_max)
        assert row["-"]["strength"] == pytest.approx(f * record.strength_min)
    for sign in "+-":
        assert curve[0.25][sign]["identity_cosine"] > curve[1.0][sign]["identity_cosine"], sign
    assert [r.id for r, _ in models.directions].count("refined/skin_tone") == 1  # the pack's list is given back
    with pytest.raises(SystemExit, match="no linear direction 'refined/hair'.*refined/smile"):
        strength_curve.run(models, photos, det, "refined/hair", [1.0], "held-out", "fast")
