"""MTCNN on ONNX Runtime (facedit_faces/mtcnn.py, the networks exported by training/third_party/mtcnn_onnx.py)
against facenet-pytorch's MTCNN, the torch original it ports: the same faces on real and generated faces
and on a group photo, boxes and landmarks within a pixel, probabilities within 1e-3, nothing on a photo
without faces; its parts (area resampling, NMS) against torch's; the networks' files checked at start."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.support import MODEL_STORE

THIRD_PARTY = MODEL_STORE / "third_party"
PIXEL, PROBABILITY = 1.0, 1e-3  # the parity the encoder's detector must keep with facenet-pytorch


@pytest.fixture(scope="module")
def ours():
    from facedit_faces.detect import network_files
    from facedit_faces.mtcnn import Mtcnn

    files = network_files(THIRD_PARTY)
    return Mtcnn(files["pnet"], files["rnet"], files["onet"], threads=1)


@pytest.fixture(scope="module")
def reference():
    import torch
    from facenet_pytorch import MTCNN

    torch.set_num_threads(1)
    mtcnn = MTCNN(keep_all=True, select_largest=False, post_process=False, device="cpu")

    def detect(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            boxes, probs, points = mtcnn.detect(pixels.copy(), landmarks=True)
        if boxes is None:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        return boxes.astype(np.float32), probs.astype(np.float32), points.astype(np.float32)
    return detect


def upsample(pixels: np.ndarray, side: int = 256) -> np.ndarray:
    """(h, w) or (h, w, 3) uint8 -> (side, side, 3) uint8, bicubic (as the detector upsamples small photos)."""
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, -1)
    return np.asarray(Image.fromarray(pixels).resize((side, side), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def faces():
    return parity_photos()


def parity_photos() -> dict[str, np.ndarray]:
    """name -> (H, W, 3) uint8 photo: the astronaut; 10 real LFW faces (skimage's lfw_subset, 25x25 gray);
    8 DigiFace DCGAN faces (the ONNX file `make setup` built); 6 faces of the project's renderer; a group
    photo of 6 of them pasted on a canvas."""
    import onnxruntime as ort
    from skimage import data

    from training.data import renderer

    photos = {"astronaut": data.astronaut()}
    lfw = (data.lfw_subset()[:10] * 255).round().astype(np.uint8)  # its first 100 images are faces
    photos.update({f"lfw{i}": upsample(f, 160) for i, f in enumerate(lfw)})
    gen = ort.InferenceSession(str(THIRD_PARTY / "digiface64_generator.onnx"), providers=["CPUExecutionProvider"])
    digiface = gen.run(None, {"z": np.random.default_rng(5).standard_normal((8, 100)).astype(np.float32)})[0]
    photos.update({f"digiface{i}": upsample(f) for i, f in enumerate(digiface)})
    rendered, _ = renderer.render_seed(3, 6, size=128)
    photos.update({f"rendered{i}": upsample(f) for i, f in enumerate(rendered)})
    group = np.full((600, 900, 3), 200, np.uint8)
    group[20:270, 20:270] = photos["astronaut"][0:250, 100:350]
    for (y, x), name in zip([(30, 320), (30, 600), (330, 40), (330, 330), (330, 620)],
                            ["digiface0", "lfw1", "digiface2", "lfw3", "rendered0"]):
        group[y:y + 256, x:x + 256] = upsample(photos[name])
    photos["group"] = group
    return photos


def assert_same_faces(ours_found, ref_found, name: str) -> int:
    """Each face of the reference has one of ours with the box and landmarks within PIXEL and the probability
    within PROBABILITY, and there are no others; returns the number of faces."""
    (boxes, probs, points), (ref_boxes, ref_probs, ref_points) = ours_found, ref_found
    assert len(boxes) == len(ref_boxes), f"{name}: {len(boxes)} faces, facenet-pytorch {len(ref_boxes)}"
    unmatched = list(range(len(boxes)))
    for b, p, pts in zip(ref_boxes, ref_probs, ref_points):
        j = min(unmatched, key=lambda k: np.abs(boxes[k] - b).max())
        unmatched.remove(j)
        assert np.abs(boxes[j] - b).max() <= PIXEL, f"{name}: box {boxes[j]} vs {b}"
        assert np.abs(points[j] - pts).max() <= PIXEL, f"{name}: landmarks {points[j]} vs {pts}"
        assert abs(probs[j] - p) <= PROBABILITY, f"{name}: probability {probs[j]} vs {p}"
    return len(boxes)


def test_onnx_mtcnn_finds_the_same_faces_as_facenet_pytorch(ours, reference, faces):
    found = {name: assert_same_faces(ours.detect(photo), reference(photo), name) for name, photo in faces.items()}
    # not vacuous: both find the face of every single-face photo (the rendered faces: most) and all six
    # of the group
    assert found["group"] == 6
    assert found["astronaut"] == 1
    assert sum(found[n] == 1 for n in faces if n.startswith(("lfw", "digiface"))) == 18
    assert sum(found[n] for n in faces if n.startswith("rendered")) >= 4


def test_onnx_mtcnn_finds_no_face_where_there_is_none(ours, reference):
    from skimage import data

    for name, photo in [("coffee", data.coffee()), ("gray", np.full((300, 400, 3), 128, np.uint8)),
                        ("noise", np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))]:
        boxes, probs, points = ours.detect(photo)
        assert boxes.shape == (0, 4) and probs.shape == (0,) and points.shape == (0, 5, 2), name
        assert len(reference(photo)[0]) == 0, name


def test_area_resampling_is_torchs_area_interpolation_bit_for_bit():
    """The pyramid levels and the R-Net / O-Net crops of facenet-pytorch: F.interpolate(mode="area") on the
    channels-last float image; ours sums exact integers, so the two agree to the last bit."""
    import torch
    import torch.nn.functional as F

    from facedit_faces.mtcnn import area_level, area_resample, area_windows, integral_image

    pixels = np.random.default_rng(1).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    image = torch.from_numpy(pixels).unsqueeze(0).permute(0, 3, 1, 2).float()  # as detect_face holds it
    ii = integral_image(pixels)
    for y0, y1, x0, x1, oh, ow in [(0, 97, 0, 131, 59, 79), (0, 97, 0, 131, 13, 17), (5, 40, 7, 60, 24, 24),
                                   (0, 10, 120, 131, 48, 48), (3, 97, 0, 131, 97, 131)]:
        want = F.interpolate(image[:, :, y0:y1, x0:x1], size=(oh, ow), mode="area")[0].permute(1, 2, 0).numpy()
        got = area_resample(ii, area_windows(np.array([y0]), np.array([y1]), oh),
                            area_windows(np.array([x0]), np.array([x1]), ow))[0]
        np.testing.assert_array_equal(got, want)
        if (y0, y1, x0, x1) == (0, 97, 0, 131):  # a pyramid level
            np.testing.assert_array_equal(area_level(ii, oh, ow)[0], want)


def test_nms_keeps_what_torchvision_keeps_in_its_order():
    import torch
    from torchvision.ops import nms as torch_nms

    from facedit_faces.mtcnn import nms

    rng = np.random.default_rng(2)
    for n in (0, 1, 50, 400):
        corner = rng.uniform(0, 200, (n, 2)).astype(np.float32)
        boxes = np.concatenate([corner, corner + rng.uniform(5, 60, (n, 2)).astype(np.float32)], 1)
        scores = rng.choice(np.linspace(0.6, 1.0, 30).astype(np.float32), n)  # ties on purpose
        for threshold in (0.5, 0.7):
            want = torch_nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
            np.testing.assert_array_equal(nms(boxes, scores, threshold), want)


def test_the_detector_checks_its_networks_against_mtcnn_json(tmp_path):
    from facedit_core.pack import PackError
    from facedit_faces.detect import MANIFEST, FaceDetector

    with pytest.raises(PackError, match="mtcnn.json is missing.*make setup"):
        FaceDetector(folder=tmp_path)
    for name in json.loads((THIRD_PARTY / MANIFEST).read_text())["nets"].values():
        shutil.copy(THIRD_PARTY / name["path"], tmp_path)
    shutil.copy(THIRD_PARTY / MANIFEST, tmp_path)
    assert FaceDetector(folder=tmp_path).detect(np.full((64, 64, 3), 128, np.uint8)) == []
    onet = tmp_path / "mtcnn_onet.onnx"
    good = onet.read_bytes()
    onet.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # one bit flipped
    with pytest.raises(PackError, match="mtcnn_onet.onnx: sha256 .* does not match mtcnn.json"):
        FaceDetector(folder=tmp_path)
    onet.unlink()
    with pytest.raises(PackError, match="mtcnn_onet.onnx is listed in mtcnn.json but missing"):
        FaceDetector(folder=tmp_path)


def test_the_encoder_service_detects_faces_without_loading_torch():
    """Beyond the import contract (.importlinter): nothing loads torch at run time either."""
    import subprocess
    import sys

    from tests.support import ROOT

    code = ("import sys; import services.encoder.server; from facedit_faces.detect import FaceDetector; "
            "import numpy as np; from skimage import data; "
            f"found = FaceDetector(folder={str(THIRD_PARTY)!r}).detect(data.astronaut()); "
            "print(len(found), sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'facenet_pytorch')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "[]"], out.stdout + out.stderr


def test_the_conversion_is_byte_reproducible_and_matches_what_setup_built(tmp_path):
    """training/third_party/mtcnn_onnx.py run again writes the same three files (the sha256 in the mtcnn.json
    of `make setup`), with a dynamic P-Net size and R-Net / O-Net batch."""
    import onnxruntime as ort

    from facedit_faces.detect import MANIFEST
    from training.third_party import mtcnn_onnx

    mtcnn_onnx.write(tmp_path)
    built, again = (json.loads((d / MANIFEST).read_text())["nets"] for d in (THIRD_PARTY, tmp_path))
    assert {n: e["sha256"] for n, e in again.items()} == {n: e["sha256"] for n, e in built.items()}
    pnet, onet = (ort.InferenceSession(str(tmp_path / again[n]["path"]), providers=["CPUExecutionProvider"])
                  for n in ("pnet", "onet"))
    reg, prob = pnet.run(None, {"image": np.zeros((1, 3, 37, 101), np.float32)})
    assert reg.shape == (1, 4, 14, 46) and prob.shape == (1, 2, 14, 46)
    assert [o.shape for o in onet.run(None, {"image": np.zeros((5, 3, 48, 48), np.float32)})] == [(5, 4), (5, 10), (5, 2)]
