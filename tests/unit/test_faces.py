"""The real-photo pipeline's parts: the imported DigiFace generator, alignment geometry,
MTCNN detection on a real portrait, paste-back, and the measured annotators."""
from __future__ import annotations

import numpy as np
import pytest

from facedit_core import align
from tests.support import MODEL_STORE

THIRD_PARTY = MODEL_STORE / "third_party"


@pytest.fixture(scope="module")
def detector():
    from facedit_faces.detect import FaceDetector

    return FaceDetector(threads=1, folder=THIRD_PARTY)


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def generated_faces():
    """Eight DigiFace DCGAN faces, (8, 64, 64, 3) uint8, from the ONNX file `make setup` built."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(THIRD_PARTY / "digiface64_generator.onnx"), providers=["CPUExecutionProvider"])
    z = np.random.default_rng(5).standard_normal((8, 100)).astype(np.float32)
    return sess.run(None, {"z": z})[0]


def test_digiface_generator_onnx_matches_the_wheels_pytorch_weights():
    from training.third_party.build import check_generator

    assert check_generator(THIRD_PARTY / "digiface64_generator.onnx") <= 1.0  # pixel levels of 255


def test_digiface_import_is_byte_reproducible_and_listed_with_its_sha256():
    from facedit_core.pack import load_pack, sha256

    pack = load_pack("digiface64", MODEL_STORE)
    entry = pack.manifest["artefacts"]["generator"]
    assert entry["source"]["licence"].startswith("MIT")
    assert pack.artefact("generator") == MODEL_STORE / "digiface64" / entry["path"]
    assert sha256(THIRD_PARTY / "digiface64_generator.onnx") == entry["sha256"]


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    angle, scale, shift = 0.3, 0.7, np.array([12.0, -4.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ (scale * rot).T + shift
    a = align.similarity(src, dst)
    np.testing.assert_allclose(align.apply(a, src), dst, atol=1e-9)
    np.testing.assert_allclose(align.apply(align.invert(a), dst), src, atol=1e-9)
    assert align.scale_of(a) == pytest.approx(scale)
    with pytest.raises(ValueError):
        align.similarity(np.zeros((5, 2)), dst)


def test_crop_samples_the_photo_where_the_transform_says():
    photo = np.zeros((200, 300, 3), np.uint8)
    photo[100:110, 150:160] = 255  # a white square centred at (154.5, 104.5)
    a = align.similarity(np.array([[154.5, 104.5], [164.5, 104.5]]), np.array([[32.0, 32.0], [42.0, 32.0]]))
    crop = align.crop(photo, a, 64)
    ys, xs = np.nonzero(crop[..., 0] > 128)
    assert abs(xs.mean() - 32.0) < 1.0 and abs(ys.mean() - 32.0) < 1.0


def test_paste_changes_only_the_masked_face_region():
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    template = np.array([[22.4, 30.9], [42.6, 30.4], [32.3, 43.8], [23.9, 54.9], [41.0, 54.6]])
    landmarks = template * 2.0 + np.array([100.0, 60.0])  # a face twice the crop size
    a = align.similarity(landmarks, template)
    face = align.crop(photo, a, 64)
    mask = align.blend_mask(template, 64)
    assert mask.max() == pytest.approx(1.0) and mask[0, 0] == 0.0
    # pasting the photo's own crop back in "delta" mode changes nothing
    same = align.paste(photo, a, face, mask, original_face=face)
    np.testing.assert_array_equal(same, photo)
    # a white face: the centre turns white, far away nothing changes
    white = np.full_like(face, 255)
    out = align.paste(photo, a, white, mask)
    centre = align.apply(align.invert(a), template.mean(0, keepdims=True))[0].round().astype(int)
    assert (out[centre[1], centre[0]] == 255).all()
    np.testing.assert_array_equal(out[:50], photo[:50])
    np.testing.assert_array_equal(out[:, 250:], photo[:, 250:])


def _pack_templates() -> dict[str, np.ndarray]:
    """The alignment template of every committed pack that has one: {pack: (5, 2) crop pixels}."""
    import json

    out = {}
    for manifest in sorted(MODEL_STORE.glob("*/manifest.json")):
        template = json.loads(manifest.read_text()).get("alignment", {}).get("template")
        if template:
            out[manifest.parent.name] = np.asarray(template, np.float64)
    return out


def test_the_blend_mask_is_zero_on_the_crop_border_for_every_pack_template():
    """The feathered mask ends inside the crop on every side (it used to be 1.0 on the bottom rows: a hard
    seam at the chin), and still covers the landmarks fully."""
    templates = _pack_templates()
    assert "digiface64" in templates
    digiface = templates["digiface64"]
    cases = [(name, t, 64) for name, t in templates.items()]
    cases += [(f"digiface64 x{s / 64:g}", digiface * s / 64, s) for s in (32, 128, 256)]
    cases += [("shifted down", digiface + [0.0, 6.0], 64), ("shifted left", digiface - [9.0, 0.0], 64)]
    for name, template, size in cases:
        mask = align.blend_mask(template, size)
        assert mask.shape == (size, size) and mask.dtype == np.float32, name
        for edge in (mask[:2], mask[-2:], mask[:, :2], mask[:, -2:]):
            assert edge.max() == 0.0, name
        assert mask.max() == pytest.approx(1.0), name
        if not name.startswith("shifted"):  # a mouth 2 pixels from the crop's edge cannot be edited in full
            inside = [mask[round(y), round(x)] for x, y in template]
            assert min(inside) > (0.9 if size >= 64 else 0.8), (name, inside)  # eyes, nose, mouth corners


def test_paste_on_a_tilted_face_leaves_the_warped_crop_border_unchanged(detector, astronaut):
    """A rotated photo: the crop's border runs diagonally through the photo; along it (and outside it) the
    pasted photo equals the original in delta and in replace mode."""
    from PIL import Image

    template = _pack_templates()["digiface64"]
    photo = np.asarray(Image.fromarray(astronaut).rotate(25, resample=Image.Resampling.BICUBIC, fillcolor=(90, 90, 90)))
    found = detector.detect(photo)
    assert len(found) == 1
    a = align.similarity(found[0].landmarks, template)
    crop = align.crop(photo, a, 64)
    mask = align.blend_mask(align.apply(a, found[0].landmarks), 64)
    bright = np.clip(crop.astype(int) + 80, 0, 255).astype(np.uint8)
    s = np.linspace(0, 63, 64 * 8)
    border = np.concatenate([np.stack([s, np.zeros_like(s)], 1), np.stack([s, np.full_like(s, 63)], 1),
                             np.stack([np.zeros_like(s), s], 1), np.stack([np.full_like(s, 63), s], 1)])
    pixels = np.unique(np.round(align.apply(align.invert(a), border)).astype(int), axis=0)
    assert len(pixels) > 200
    white = np.full_like(crop, 255)
    for out in (align.paste(photo, a, bright, mask, original_face=crop), align.paste(photo, a, white, mask)):
        changed = np.abs(out.astype(int) - photo.astype(int)).sum(2)
        assert changed.max() > 50  # the face did change
        np.testing.assert_array_equal(out[pixels[:, 1], pixels[:, 0]], photo[pixels[:, 1], pixels[:, 0]])
        # and nothing changed outside the warped crop
        yy, xx = np.nonzero(changed)
        q = align.apply(a, np.stack([xx, yy], 1).astype(np.float64))
        assert q.min() > 0 and q.max() < 63


def test_mtcnn_finds_the_astronauts_face_with_plausible_landmarks(detector, astronaut):
    found = detector.detect(astronaut)
    assert len(found) == 1
    d = found[0]
    x0, y0, x1, y1 = d.box
    assert d.score > 0.99 and 60 < x1 - x0 < 160 and 60 < y1 - y0 < 160
    eye_l, eye_r, nose, mouth_l, mouth_r = d.landmarks
    assert eye_l[0] < nose[0] < eye_r[0] and mouth_l[0] < mouth_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    assert all(x0 <= p[0] <= x1 and y0 <= p[1] <= y1 for p in d.landmarks)


@pytest.mark.parametrize("cut", ["top", "left"])
def test_boxes_of_faces_cut_off_by_the_edge_are_clipped_to_the_photo(detector, astronaut, cut):
    photo = np.ascontiguousarray(astronaut[100:] if cut == "top" else astronaut[:, 215:])
    found = detector.detect(photo)
    assert len(found) == 1  # MTCNN's box reached 106 pixels above the photo, 69 left of it
    x0, y0, x1, y1 = found[0].box
    h, w = photo.shape[:2]
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    assert (y0 if cut == "top" else x0) == 0
    assert found[0].landmarks.shape == (5, 2)


def test_mtcnn_finds_nothing_in_a_blank_photo(detector):
    assert detector.detect(np.full((300, 400, 3), 128, np.uint8)) == []


def test_yaw_annotator_changes_sign_under_a_mirror_flip(detector, generated_faces):
    from training.data import annotators

    i = annotators.ATTRIBUTES.index("yaw")
    pairs = []
    for face in generated_faces:
        a, b = detector.detect(face), detector.detect(face[:, ::-1].copy())
        if a and b:
            pairs.append((annotators.measure(face, a[0].landmarks)[i],
                          annotators.measure(face[:, ::-1], b[0].landmarks)[i]))
    assert len(pairs) >= 5
    yaw, flipped = np.array(pairs).T
    assert np.abs(yaw + flipped).mean() < 0.35 * np.abs(yaw).mean() + 0.03


def test_roll_annotator_follows_a_known_rotation(detector, generated_faces):
    from training.data import annotators

    i = annotators.ATTRIBUTES.index("roll")
    shifts = []
    for face in generated_faces:
        a, b = detector.detect(face), detector.detect(annotators.rotate(face, -10.0))  # PIL: + = counter-clockwise
        if a and b:
            shifts.append(annotators.measure(face, b[0].landmarks)[i] - annotators.measure(face, a[0].landmarks)[i])
    assert len(shifts) >= 5
    assert abs(np.median(shifts) - 10.0) < 3.0, shifts


def test_a_huge_photo_is_detected_at_a_bounded_size_and_the_face_found(detector, astronaut, monkeypatch):
    """A 4096x4096 photo (the astronaut enlarged 8x) is detected on a copy of at most MAX_DETECT_SIDE
    pixels, so one photo cannot hold the detector for long; boxes come back in photo pixels."""
    from PIL import Image

    from facedit_faces.detect import MAX_DETECT_SIDE

    huge = np.asarray(Image.fromarray(astronaut).resize((4096, 4096), Image.Resampling.BILINEAR))
    sizes, real = [], detector.mtcnn.detect
    monkeypatch.setattr(detector.mtcnn, "detect",
                        lambda pixels, *more: (sizes.append(pixels.shape[1::-1]), real(pixels, *more))[1])
    small, big = detector.detect(astronaut), detector.detect(huge)
    assert sizes[-1] == (MAX_DETECT_SIDE, MAX_DETECT_SIDE)
    assert len(big) == len(small) >= 1
    assert np.allclose(big[0].box, small[0].box * 8, atol=8 * 6)  # the same face, in the big photo's pixels


def test_a_caller_waits_for_a_busy_detector_no_longer_than_its_timeout(detector, astronaut):
    from facedit_core.errors import DeadlineExceeded

    with detector._lock:  # another photo's detection is running
        with pytest.raises(DeadlineExceeded, match="busy"):
            detector.detect(astronaut, timeout_s=0.05)
    assert detector.detect(astronaut, timeout_s=5)  # free again
