"""The real-face evaluation's metric code on known inputs (training/evaluation/real_faces.py and
its report, real_faces_report.py)."""
import numpy as np
import pytest

from facedit_core import align
from training.evaluation import real_faces as rf
from training.evaluation import real_faces_report as report
from training.evaluation.similarity import hash_similarity


def _ramp_rows() -> np.ndarray:
    """A 8x9 gray image (dhash's own size) whose every row increases: every dhash bit is 1."""
    row = np.arange(9, dtype=np.uint8) * 20 + 10
    return np.repeat(np.repeat(row[None, :], 8, axis=0)[..., None], 3, axis=2)


def test_identical_faces_have_similarity_one_and_no_error():
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    m = rf.reconstruction_metrics(faces, faces.copy())
    assert np.all(m["mae"] == 0)
    for h in ("dhash", "phash", "whash"):
        assert np.all(m[h] == 1.0), h


def test_one_flipped_dhash_bit_gives_63_of_64():
    a = _ramp_rows()
    b = a.copy()
    b[0, 1] = 5  # row 0: 10, 5, 50, ...: the first comparison flips, the second (50 > 5) does not
    assert hash_similarity(a[None], b[None])["dhash"] == pytest.approx(63 / 64, abs=1e-4)
    assert rf.reconstruction_metrics(a[None], b[None])["dhash"][0] == pytest.approx(63 / 64, abs=1e-4)


def test_mae_is_in_units_of_the_pixel_range():
    black, grey = np.zeros((2, 8, 8, 3), np.uint8), np.full((2, 8, 8, 3), 51, np.uint8)
    np.testing.assert_allclose(rf.reconstruction_metrics(black, grey)["mae"], [0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(rf.reconstruction_metrics(black, black + 255)["mae"], [1.0, 1.0])


def test_cosine_of_known_vectors():
    a = np.array([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0]])
    b = np.array([[0.0, 3.0], [2.0, 2.0], [-1.0, 0.0]])
    np.testing.assert_allclose(rf.cosine(a, b), [0.0, 1.0, -1.0], atol=1e-12)


def test_moved_follows_the_asked_sign_and_a_lost_face_is_not_moved():
    before = np.array([0.5, 0.5, 0.5, 0.5])
    after = np.array([0.7, 0.3, 0.5, np.nan])
    assert rf.moved(before, after, +1.0).tolist() == [True, False, False, False]
    assert rf.moved(before, after, -2.5).tolist() == [False, True, False, False]


def test_a_scaled_crop_covers_what_the_pack_crop_covers():
    a = align.similarity(np.array([[100, 120], [160, 118], [130, 150], [108, 180], [152, 178]], float),
                         np.array([[22.1, 30.9], [42.2, 30.6], [32.1, 43.8], [23.5, 54.8], [40.7, 54.6]]))
    p = np.array([[100.0, 120.0], [140.0, 170.0]])
    big = align.apply(rf.scaled(a, 160, 64), p)
    np.testing.assert_allclose(big, (align.apply(a, p) + 0.5) * 2.5 - 0.5, atol=1e-9)
    np.testing.assert_allclose(align.apply(rf.scaled(a, 64, 64), p), align.apply(a, p), atol=1e-9)


def _result(moved_flags: list[bool], lost: list[bool]) -> dict:
    faces = [{"file": f"f{k}", "split": "held-out", "status": "public-domain", "face": 0, "mae": 0.1, "dhash": 0.8,
              "phash": 0.7, "whash": 0.9, "facenet_cosine": 0.4, "facenet_cosine_resolution": 0.97,
              "edits": {"interfacegan/smile +": {"lost": lo, "moved_annotator": m, "moved_classifier": True,
                                                 "moved_rendering": True, "change_iqr": None if lo else 1.0,
                                                 "identity_cosine": None if lo else 0.8}}}
             for k, (m, lo) in enumerate(zip(moved_flags, lost))]
    return {"faces": faces, "directions": {"interfacegan/smile": {"attribute": "smile", "method": "interfacegan",
                                                                  "+": 3.0, "-": -3.0}},
            "edit_ms_per_face": {"interfacegan/smile +": 12.5}, "reconstruct_ms_per_face": 4.0}


def test_aggregate_shares_count_lost_faces_as_not_moved():
    agg = report.aggregate(_result([True, True, False, False], [False, False, False, True]), "held-out")
    e = agg["edits"]["interfacegan/smile"]["+"]
    assert agg["faces"] == 4 and e["faces"] == 4 and e["lost"] == 1
    assert e["moved_annotator"] == 0.5 and e["moved_classifier"] == 1.0
    assert e["identity_cosine"] == 0.8  # over the faces still found
    assert report.aggregate(_result([True], [False]), "tuning") == {"faces": 0}


def test_the_card_section_says_when_its_figures_belong_to_another_version():
    r = {"version": "v1", "fidelity": "fast", "paste": "delta", "date": "2026-12-03", "command": "`make x`",
         "photos_note": "1 photo.", "resolution": 64, "other_people_cosine": 0.3,
         "sets": {"held-out": {**report.aggregate(_result([True], [False]), "held-out")}}}
    assert "not this one" not in "\n".join(report.card_section(r, "v1"))
    assert "not this one" in "\n".join(report.card_section(r, "v2"))
    assert report.card_section(None, "v1") == []


def test_contact_sheet_has_a_column_per_edit_and_a_row_per_face():
    faces = np.zeros((3, 64, 64, 3), np.uint8)
    sheet = {"original": faces, "reconstruction": faces, "edits": {(a, s): faces for a in ("smile", "yaw")
                                                                    for s in "-+"}}
    img = report.contact_sheet(sheet, [0, 2], ["yaw", "smile"])
    assert img.size == (6 * 66, 12 + 2 * 66)


def test_face_regions_sit_where_the_template_puts_mouth_and_nose():
    from training.data import annotators

    template = np.array([[22.1, 30.9], [42.2, 30.6], [32.1, 43.8], [23.5, 54.8], [40.7, 54.6]])
    r = annotators.regions(template, 64)
    assert r["mouth"][55, 32] and r["mouth"][55, 24] and not r["mouth"][44, 32]   # corners in, nose out
    assert r["upper_lip"][48, 32] and not r["upper_lip"][43, 32] and not r["upper_lip"][56, 32]
    assert r["face"][31, 22] and not r["face"][2, 2]
    assert r["mouth"].sum() < r["face"].sum() and (r["mouth"] & ~r["face"]).sum() == 0


def test_upper_lip_darkening_counts_darker_pixels_only():
    mask = np.zeros((8, 8), bool)
    mask[2:4, 2:6] = True
    face = np.full((1, 8, 8, 3), 200, np.uint8)
    darker, lighter = face.copy(), face.copy()
    darker[0, 2:4, 2:6] = 149   # 51 levels darker: 0.2 of the luminance
    lighter[0, 2:4, 2:6] = 250
    assert rf.upper_lip_darkening(face, face, mask)[0] == 0
    assert rf.upper_lip_darkening(face, darker, mask)[0] == pytest.approx(0.2, abs=1e-6)
    assert rf.upper_lip_darkening(face, lighter, mask)[0] == 0
    darker[0, 6, 6] = 0  # outside the mask: not counted
    assert rf.upper_lip_darkening(face, darker, mask)[0] == pytest.approx(0.2, abs=1e-6)


def test_the_evaluation_pastes_into_a_grey_photo_like_the_gateway_keeping_it_grey():
    template = np.array([[22.1, 30.9], [42.2, 30.6], [32.1, 43.8], [23.5, 54.8], [40.7, 54.6]])
    photo = np.repeat(np.linspace(40, 220, 128 * 128).reshape(128, 128, 1).astype(np.uint8), 3, axis=2)
    landmarks = template * 1.5 + 16
    a = align.similarity(landmarks, template)
    face = rf.Face(0, landmarks, (0, 0, 128, 128), a, align.crop(photo, a, 64))
    rng = np.random.default_rng(1)
    edited = rng.integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)  # a coloured rendering
    out = rf.paste_faces(photo, [face], edited, face.crop[None], "delta")
    assert not np.array_equal(out, photo)  # the edit is there
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])


def _weights_rows(base_gain: float, candidates: dict[float, tuple[float, float]]) -> dict:
    """rows as refine_weights.run returns them: candidates {weight: (gain at +, moved share at +)}."""
    def row(gain, moved):
        return {"generated": {"+": {"gain": gain}}, "tuning_photos": {"+": {"moved_annotator": moved}}}
    return {"interfacegan": row(base_gain, 0.9), **{f"lip {w:g}": row(*c) for w, c in candidates.items()}}


def test_the_lip_weight_rule_takes_the_cleanest_weight_that_still_edits():
    from training.evaluation.refine_weights import choose

    # smile as first measured: 100 moves too few faces, 60 is the largest moving >= 80 %
    assert choose(_weights_rows(2.8, {30: (2.6, 0.91), 60: (2.3, 0.83), 100: (1.6, 0.78)}))[0] == 60
    # mouth_open: 60 keeps less than half of InterFaceGAN's gain, so 30 though 60 moves enough faces
    assert choose(_weights_rows(2.55, {15: (2.2, 0.96), 30: (1.5, 0.96), 60: (0.8, 0.87)}))[0] == 30
    # none moves 80 %: the largest of those moving the most; a weaker mover is not taken for being cleaner
    weight, why = choose(_weights_rows(2.8, {30: (2.6, 0.78), 60: (2.3, 0.78), 100: (1.6, 0.70)}))
    assert weight == 60 and "no weight moves 80%" in why
    assert choose(_weights_rows(2.8, {30: (2.6, 0.80), 60: (2.3, 0.78)}))[0] == 30
    assert choose(_weights_rows(2.8, {60: (1.0, 0.9)}))[0] is None
