"""The committed digiface64 pack's refined smile direction against its InterFaceGAN one, measured here on
held-out generated faces with the served ONNX models: the upper lip darkens much less (what a photo shows as
a moustache), and the smile still grows, by the classifier and by the MTCNN mouth-width annotator, which the
refinement never saw."""
import numpy as np
import pytest

from facedit_core.pack import load_pack, read_directions
from facedit_faces.detect import FaceDetector
from tests.support import MODEL_STORE
from training.data import annotators
from training.onnx_io import session
from training.third_party.wheels import DEFAULT_DIR

STRENGTH = 3.0
FACES = 200


@pytest.fixture(scope="module")
def smiles():
    pack = load_pack("digiface64", MODEL_STORE)
    gen, cls = session(pack.artefact("generator"), 2), session(pack.artefact("classifier"), 2)
    vectors = {r.id: v for r, v in read_directions(pack)}
    z = np.random.default_rng(2026_12_03).standard_normal((FACES, pack.latent_dim)).astype(np.float32)

    def render(z):
        return gen.run(None, {"z": z})[0]
    base = render(z)
    after = {m: render(z + STRENGTH * vectors[f"{m}/smile"][None].astype(np.float32))
             for m in ("interfacegan", "refined")}
    template = np.asarray(pack.manifest["alignment"]["template"])
    return pack, cls, base, after, annotators.regions(template, pack.resolution)


def test_the_refined_smile_darkens_the_upper_lip_far_less(smiles):
    _, _, base, after, masks = smiles
    lip = masks["upper_lip"]
    darkening = {m: np.maximum(annotators.luminance(base) - annotators.luminance(x), 0)[:, lip].mean() for m, x in after.items()}
    assert darkening["refined"] < 0.5 * darkening["interfacegan"], darkening


def test_the_refined_smile_still_smiles_by_the_classifier_and_by_the_annotator(smiles):
    pack, cls, base, after, _ = smiles
    i = pack.attributes.index("smile")
    p0 = cls.run(None, {"pixels": base})[0][:, i]
    p1 = {m: cls.run(None, {"pixels": x})[0][:, i] for m, x in after.items()}
    assert (p1["refined"] > p0).mean() >= 0.9
    assert (p1["refined"] - p0).mean() >= 0.6 * (p1["interfacegan"] - p0).mean()
    det = FaceDetector(folder=DEFAULT_DIR)
    j = annotators.ATTRIBUTES.index("smile")
    found0, _, v0 = annotators.detect_and_measure(det, base)
    found1, _, v1 = annotators.detect_and_measure(det, after["refined"])
    both = found0 & found1
    assert both.sum() >= 0.8 * FACES
    assert (v1[both, j] > v0[both, j]).mean() >= 0.8  # the mouth widens, measured on the landmarks


def test_less_smile_turns_fewer_heads_away(smiles):
    """InterFaceGAN's smile - also turns heads towards a profile (the classifier's smile falls on turned
    faces); the refined one keeps the other attributes, so MTCNN still finds more of the faces."""
    pack = smiles[0]
    gen = session(pack.artefact("generator"), 2)
    vectors = {r.id: v for r, v in read_directions(pack)}
    z = np.random.default_rng(2026_12_03).standard_normal((FACES, pack.latent_dim)).astype(np.float32)
    det = FaceDetector(folder=DEFAULT_DIR)
    found = {m: annotators.detect_and_measure(det, gen.run(None, {"z": z - STRENGTH * vectors[f"{m}/smile"][None]})[0])[0]
             for m in ("interfacegan", "refined")}
    assert found["refined"].sum() > found["interfacegan"].sum(), {m: int(f.sum()) for m, f in found.items()}
