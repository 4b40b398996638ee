"""Tests of training/data/renderer.py: the procedural faces and their ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from training.data import face_drawing, renderer
from training.data.renderer import ATTRIBUTES, IDENTITY_PARAMS, Faces

N = 200  # faces per check: enough for stable means, fast (~20 ms per render at 32x32)


def _rows_in(box: np.ndarray, size: int) -> np.ndarray:
    """(N, 4) normalised boxes -> (N, size) bool: pixel rows whose centres lie in [y0, y1]."""
    centres = (np.arange(size) + 0.5) * 2.0 / size - 1.0
    return (centres[None, :] >= box[:, :1]) & (centres[None, :] <= box[:, 1:2])


def _change(faces: Faces, name: str, size: int = 32) -> np.ndarray:
    """(N, size, size) mean-over-channels |render(name = 1) - render(name = 0)|, 0..255."""
    lo = renderer.render(renderer.with_attribute(faces, name, 0.0), size).astype(np.float32)
    hi = renderer.render(renderer.with_attribute(faces, name, 1.0), size).astype(np.float32)
    return np.abs(hi - lo).mean(axis=3)


@pytest.fixture(scope="module")
def faces() -> Faces:
    return renderer.sample_faces(2024, N)


# --------------------------------------------------------------------------- determinism

def test_same_seed_gives_identical_bytes():
    a, fa = renderer.render_seed(3, 64, 32)
    b, fb = renderer.render_seed(3, 64, 32)
    assert a.tobytes() == b.tobytes()
    assert fa.identity.tobytes() == fb.identity.tobytes()
    assert fa.attributes.tobytes() == fb.attributes.tobytes()


def test_different_seeds_give_different_images():
    a, _ = renderer.render_seed(3, 16, 32)
    b, _ = renderer.render_seed(4, 16, 32)
    per_image = np.abs(a.astype(int) - b.astype(int)).mean(axis=(1, 2, 3))
    assert np.all(per_image > 1.0)          # every pair differs, not just a few pixels


def test_each_image_depends_only_on_its_own_row(faces):
    """Batch composition (chunking, per-batch bounding boxes) must not change any image."""
    whole = renderer.render(faces, 32)
    for i in (0, 7, 130, N - 1):
        single = renderer.render(Faces(faces.identity[i:i + 1], faces.attributes[i:i + 1]), 32)
        assert np.array_equal(single[0], whole[i])


@pytest.mark.parametrize("size", [16, 32, 64])
def test_part_boxes_lose_nothing(monkeypatch, size):
    """Each part is drawn only inside its box over the batch; drawing everything on the
    whole frame gives the same bytes, also for extreme parameter values."""
    rng = np.random.default_rng(5)
    identity = rng.integers(0, 2, (300, len(IDENTITY_PARAMS))).astype(np.float32)
    attributes = rng.integers(0, 2, (300, len(ATTRIBUTES))).astype(np.float32)
    identity[::2] = rng.random(identity[::2].shape, dtype=np.float32)
    extreme = Faces(identity, attributes)
    boxed = renderer.render(extreme, size)
    monkeypatch.setattr(face_drawing, "_FULL_FRAME", True)
    assert np.array_equal(renderer.render(extreme, size), boxed)


# --------------------------------------------------------------------------- shapes and ranges

def test_sample_faces_shapes_and_ranges():
    f = renderer.sample_faces(0, 500)
    assert f.identity.shape == (500, len(IDENTITY_PARAMS)) and f.identity.dtype == np.float32
    assert f.attributes.shape == (500, 6) and f.attributes.dtype == np.float32
    assert ATTRIBUTES == ("smile", "eyeglasses", "beard", "blond_hair", "yaw", "age")
    assert len(f) == 500
    for arr in (f.identity, f.attributes):
        assert arr.min() >= 0.0 and arr.max() <= 1.0
    for name in ("eyeglasses", "beard"):
        assert set(np.unique(f.attribute(name))) == {0.0, 1.0}
    for name in ("smile", "blond_hair", "yaw", "age"):
        values = f.attribute(name)
        assert len(np.unique(values)) > 450 and 0.4 < values.mean() < 0.6   # continuous, uniform
    assert renderer.sample_faces(0, 0).identity.shape == (0, len(IDENTITY_PARAMS))


@pytest.mark.parametrize("size", [32, 64])
def test_render_shape_dtype_range(faces, size):
    images = renderer.render(faces, size)
    assert images.shape == (N, size, size, 3) and images.dtype == np.uint8
    assert images.flags.c_contiguous
    assert images.min() < 40 and images.max() > 215          # dark pupils/frames and bright eye whites
    assert np.all(images.reshape(N, -1).std(axis=1) > 20)   # no blank image
    # the face (skin) sits in the middle, the background in the corner differs from it
    assert np.all(np.abs(images[:, size // 2, size // 2].astype(int) - images[:, 0, 0]).sum(axis=1) > 10)


def test_render_other_sizes_and_empty_batch(faces):
    assert renderer.render(faces, 16).shape == (N, 16, 16, 3)
    assert renderer.render(faces, 48).shape == (N, 48, 48, 3)
    empty = Faces(np.zeros((0, len(IDENTITY_PARAMS)), np.float32), np.zeros((0, 6), np.float32))
    assert renderer.render(empty, 32).shape == (0, 32, 32, 3)


def test_render_does_not_modify_its_input(faces):
    identity, attributes = faces.identity.copy(), faces.attributes.copy()
    renderer.render(faces, 32)
    assert np.array_equal(identity, faces.identity) and np.array_equal(attributes, faces.attributes)


def test_hair_style_is_four_discrete_styles(faces):
    column = IDENTITY_PARAMS.index("hair_style")
    base = Faces(faces.identity[:20].copy(), faces.attributes[:20])

    def styled(value):
        identity = base.identity.copy()
        identity[:, column] = value
        return renderer.render(Faces(identity, base.attributes), 32)

    assert np.array_equal(styled(0.05), styled(0.2))          # same quarter: same style
    quarters = [styled(v) for v in (0.1, 0.4, 0.6, 0.9)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(quarters[i].astype(int) - quarters[j]).mean() > 1.0


# --------------------------------------------------------------------------- counterfactuals

@pytest.mark.parametrize("name", ATTRIBUTES)
def test_with_attribute_changes_only_that_attribute(faces, name):
    before = faces.attributes.copy()
    edited = renderer.with_attribute(faces, name, 1.0)
    k = ATTRIBUTES.index(name)
    assert np.array_equal(edited.identity, faces.identity)
    assert np.array_equal(np.delete(edited.attributes, k, axis=1), np.delete(faces.attributes, k, axis=1))
    assert np.all(edited.attributes[:, k] == 1.0)
    assert np.array_equal(faces.attributes, before)          # the original is untouched
    assert edited.attributes.dtype == np.float32
    pair = renderer.render(renderer.with_attribute(faces, name, 0.0), 32), renderer.render(edited, 32)
    assert np.all(np.abs(pair[0].astype(int) - pair[1]).reshape(N, -1).max(axis=1) > 30)


def test_with_attribute_same_value_renders_identically(faces):
    same = renderer.with_attribute(faces, "age", faces.attribute("age"))
    assert np.array_equal(renderer.render(same, 32), renderer.render(faces, 32))


@pytest.mark.parametrize("size", [32, 64])
def test_eyeglasses_change_is_in_the_eye_band(faces, size):
    change = _change(faces, "eyeglasses", size).sum(axis=2)                  # (N, rows)
    in_band = _rows_in(renderer.regions(faces)["eyes"], size)
    share = (change * in_band).sum(axis=1) / change.sum(axis=1)
    assert share.mean() > 0.85 and share.min() > 0.7                      # measured: 0.92 / 0.82 at 32


def test_beard_change_is_in_the_lower_half(faces):
    change = _change(faces, "beard").sum(axis=2)
    share = change[:, 16:].sum(axis=1) / change.sum(axis=1)
    assert share.min() > 0.9                                              # measured: all of it


def test_smile_change_is_in_the_mouth_box(faces):
    change = _change(faces, "smile", 64)
    box = renderer.regions(faces)["mouth"]
    centres = (np.arange(64) + 0.5) / 32 - 1
    rows = (centres[None] >= box[:, :1]) & (centres[None] <= box[:, 1:2])
    cols = (centres[None] >= box[:, 2:3]) & (centres[None] <= box[:, 3:4])
    inside = rows[:, :, None] & cols[:, None, :]
    share = (change * inside).sum(axis=(1, 2)) / change.sum(axis=(1, 2))
    assert share.min() > 0.95


# Mean |image(attr = 1) - image(attr = 0)| over all pixels and channels (0..255) at
# 32x32, measured on 500 faces of seed 11: smile 1.07 (the mouth is ~4% of the
# image, the smallest part), eyeglasses 4.0, beard 4.1, blond_hair 16.6,
# yaw 9.7, age 11.9. Thresholds are about half of that mean; the per-face
# minimum (smallest measured: smile 0.68, beard 1.26) must stay clearly > 0.
MIN_MEAN_CHANGE = {"smile": 0.5, "eyeglasses": 2.0, "beard": 2.0, "blond_hair": 8.0, "yaw": 4.5, "age": 6.0}
MIN_FACE_CHANGE = {"smile": 0.35, "eyeglasses": 0.8, "beard": 0.6, "blond_hair": 1.5, "yaw": 1.5, "age": 1.5}


@pytest.mark.parametrize("name", ATTRIBUTES)
def test_each_attribute_changes_the_image(faces, name):
    per_face = _change(faces, name).mean(axis=(1, 2))
    assert per_face.mean() > MIN_MEAN_CHANGE[name]
    assert per_face.min() > MIN_FACE_CHANGE[name]


@pytest.mark.parametrize("name", ["smile", "blond_hair", "yaw", "age"])
def test_continuous_attributes_change_gradually(faces, name):
    """Half-way is between the ends: |x(0) - x(.5)| and |x(.5) - x(1)| are both a real part of |x(0) - x(1)|."""
    x = [renderer.render(renderer.with_attribute(faces, name, v), 32).astype(np.float32) for v in (0.0, 0.5, 1.0)]
    first, second, total = (np.abs(x[1] - x[0]).mean(), np.abs(x[2] - x[1]).mean(), np.abs(x[2] - x[0]).mean())
    assert first > 0.2 * total and second > 0.2 * total


def test_yaw_moves_the_mouth_to_the_turned_side(faces):
    """Locate the mouth as the pixels that a smile changes; yaw 1 puts it right of yaw 0.5, yaw 0 left."""
    cols = np.arange(64)

    def mouth_column(yaw):
        f = renderer.with_attribute(faces, "yaw", yaw)
        change = _change(f, "smile", 64).sum(axis=1)                      # (N, columns)
        return (change * cols).sum(axis=1) / change.sum(axis=1)

    left, front, right = mouth_column(0.0), mouth_column(0.5), mouth_column(1.0)
    assert np.all(np.abs(front - 31.5) < 1.5)                            # frontal: centred
    assert np.all(right - front > 4) and np.all(front - left > 4)       # > 4 of 64 pixels each way


# --------------------------------------------------------------------------- sampling

def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def test_correlated_sampling_links_age_with_beard_and_glasses():
    f = renderer.sample_faces(1, 5000, correlated=True)
    age = f.attribute("age")
    # P(beard) = 0.15 + 0.6 age -> corr ~ 0.35; P(glasses) = 0.2 + 0.5 age -> ~ 0.29
    assert _corr(age, f.attribute("beard")) > 0.25
    assert _corr(age, f.attribute("eyeglasses")) > 0.2
    assert 0.4 < f.attribute("beard").mean() < 0.5                     # E = 0.15 + 0.3


def test_independent_sampling_has_no_correlation():
    f = renderer.sample_faces(1, 5000, correlated=False)
    age = f.attribute("age")
    assert abs(_corr(age, f.attribute("beard"))) < 0.05
    assert abs(_corr(age, f.attribute("eyeglasses"))) < 0.05
    assert abs(_corr(f.attribute("beard"), f.attribute("eyeglasses"))) < 0.05
    assert 0.47 < f.attribute("beard").mean() < 0.53


# --------------------------------------------------------------------------- bad input

def _faces(identity=None, attributes=None, n=4) -> Faces:
    good = renderer.sample_faces(0, n)
    return Faces(good.identity if identity is None else identity,
                 good.attributes if attributes is None else attributes)


@pytest.mark.parametrize("bad, match", [
    (lambda: _faces(identity=np.zeros((4, 3), np.float32)), r"identity must have shape"),
    (lambda: _faces(identity=np.zeros(len(IDENTITY_PARAMS), np.float32)), r"identity must have shape"),
    (lambda: _faces(attributes=np.zeros((4, 5), np.float32)), r"attributes must have shape"),
    (lambda: _faces(attributes=np.zeros((3, 6), np.float32)), r"rows"),
    (lambda: _faces(attributes=np.full((4, 6), 1.5, np.float32)), r"\[0, 1\]"),
    (lambda: _faces(identity=np.full((4, len(IDENTITY_PARAMS)), -0.1, np.float32)), r"\[0, 1\]"),
    (lambda: _faces(attributes=np.full((4, 6), np.nan, np.float32)), r"\[0, 1\]"),
])
def test_render_rejects_bad_faces(bad, match):
    with pytest.raises(ValueError, match=match):
        renderer.render(bad(), 32)


@pytest.mark.parametrize("size", [8, 15, 0, -32, 32.0, "32", True])
def test_render_rejects_bad_size(size):
    with pytest.raises(ValueError, match="size"):
        renderer.render(_faces(), size)


def test_with_attribute_rejects_unknown_name_and_bad_value():
    with pytest.raises(ValueError) as info:
        renderer.with_attribute(_faces(), "moustache", 1.0)
    assert all(name in str(info.value) for name in ATTRIBUTES)
    for value in (1.5, -0.2, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            renderer.with_attribute(_faces(), "smile", value)
    with pytest.raises(ValueError):
        renderer.sample_faces(0, -1)


# --------------------------------------------------------------------------- preview CLI

def test_main_writes_preview_and_counterfactual_sheet(tmp_path, capsys):
    from PIL import Image

    assert renderer.main(["--out", str(tmp_path / "grid.png"), "--n", "9", "--size", "32", "--bench", "0"]) == 0
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (3 * 34 + 2, 3 * 34 + 2, 3)                   # 3 x 3 faces, 2-pixel gaps

    assert renderer.main(["--out", str(tmp_path / "cf.png"), "--n", "4", "--size", "32", "--bench", "0",
                          "--counterfactual", "beard"]) == 0
    sheet = np.asarray(Image.open(tmp_path / "cf.png"))
    assert sheet.shape[0] == 4 * 34 + 2                                   # one row per face
    f = renderer.sample_faces(0, 4)
    no_beard = renderer.render(renderer.with_attribute(f, "beard", 0.0), 32)
    assert np.array_equal(sheet[2:34, 36:68], no_beard[0])                # row 1, column 2 = beard 0
    assert "wrote" in capsys.readouterr().out
