"""FLOPs per sample of an ONNX model, counted from its graph after shape inference.

Only the layers that do the arithmetic count: Conv, ConvTranspose, Gemm, MatMul,
at 2 FLOPs per multiply-accumulate (biases, activations and pixel conversion are
left out). The batch axis is fixed to 1 before shape inference, so the figures
are per sample.

    Conv           out (N, Co, *S_out), W (Co, Ci/g, *K):  2 * N * Co * prod(S_out) * Ci/g * prod(K)
    ConvTranspose  in  (N, Ci, *S_in),  W (Ci, Co/g, *K):  2 * N * Ci * prod(S_in)  * Co/g * prod(K)
                   (every input element is scattered onto prod(K) * Co/g outputs; the ones
                   that the padding crops away are counted too, as a direct implementation does)
    Gemm           A (M, K) (transA: (K, M)), out (M, N):  2 * M * N * K
    MatMul         A (..., M, K), out (..., M, N):         2 * prod(out) * K

With this convention the DCGAN of gan-face-generate (nz 100, ngf 64, 64x64) is 0.209 GFLOP,
the figure quoted in issue 4.
"""
from __future__ import annotations

import math
from pathlib import Path

import onnx
from onnx import shape_inference

COUNTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy whose graph inputs have `batch` as their first dimension when it is symbolic."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].Clear()
            dims[0].dim_value = batch
    # stale intermediate shapes with the symbolic batch would stay symbolic: infer them again
    del model.graph.value_info[:]
    return model


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for init in model.graph.initializer:
        shapes[init.name] = tuple(int(d) for d in init.dims)
    g = model.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = tuple(int(d.dim_value) for d in dims)
    for node in g.node:  # Constant nodes hold shapes too (e.g. a reshape target)
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(int(d) for d in a.t.dims)
    return shapes


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _node_flops(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    def shape(name: str) -> tuple[int, ...]:
        if name not in shapes:
            raise ValueError(f"{node.op_type} node {node.name or node.output[0]!r}: no static shape for "
                             f"{name!r} after shape inference")
        return shapes[name]

    op = node.op_type
    if op == "Conv":
        out, w = shape(node.output[0]), shape(node.input[1])
        return 2 * out[0] * out[1] * math.prod(out[2:]) * w[1] * math.prod(w[2:])
    if op == "ConvTranspose":
        x, w = shape(node.input[0]), shape(node.input[1])
        return 2 * x[0] * x[1] * math.prod(x[2:]) * w[1] * math.prod(w[2:])
    if op == "Gemm":
        a, out = shape(node.input[0]), shape(node.output[0])
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return 2 * out[0] * out[1] * k
    if op == "MatMul":
        a, out = shape(node.input[0]), shape(node.output[0])
        k = a[-1]
        return 2 * math.prod(out) * k
    return 0


def count_flops(model: onnx.ModelProto | str | Path, batch: int = 1) -> dict:
    """FLOPs of one forward pass at `batch` (default 1: per sample).

    Returns {"total": int, "by_op": {op: int}, "layers": [{"name", "op", "flops"}]}.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    inferred = shape_inference.infer_shapes(_with_batch(model, batch), strict_mode=True)
    shapes = _shapes(inferred)
    layers, by_op = [], {}
    for node in inferred.graph.node:
        if node.op_type not in COUNTED:
            continue
        f = _node_flops(node, shapes)
        layers.append({"name": node.name or node.output[0], "op": node.op_type, "flops": f})
        by_op[node.op_type] = by_op.get(node.op_type, 0) + f
    return {"total": sum(by_op.values()), "by_op": by_op, "layers": layers}
