"""Weights of an exported ONNX graph back in the training network of the same architecture.

A pack holds only ONNX files (its PyTorch checkpoints stay in runs/). The exporter folds each
BatchNorm into the convolution before it (a biased conv in the graph), so the weights are taken
from the graph's layers in order and put into the `training.models` network, checking every shape:

  ONNX Conv / ConvTranspose (W, b)  ->  nn.Conv2d / nn.ConvTranspose2d weight (+ bias)
  ONNX Gemm (B, C)                  ->  nn.Linear weight (B, or B^T without transB), bias
  ONNX BatchNormalization           ->  nn.BatchNorm2d (scale, B, mean, var)

A conv whose torch module has no bias but is followed by a BatchNorm that the graph folded away
gets its bias through that BatchNorm set to the identity (weight 1, mean 0, var 1 - eps,
bias = the folded bias), so the eval-mode network computes the same function; a Linear with a
bias followed by a folded BatchNorm1d (ISTRC's mapping) takes the folded bias itself and the
BatchNorm1d becomes the identity (bias 0). Used by the peer baseline of the benchmark
(bench/peer.py) and by `python -m training restore`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from training.models import Encoder, Generator, Oracle

_LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "BatchNormalization")
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_TORCH_LAYERS = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, *_BATCHNORMS)


def onnx_layers(path: Path) -> list[tuple[str, dict[str, np.ndarray], dict]]:
    """(op, {role: array}, attributes) of each weighted layer, in graph order."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type not in _LAYER_OPS:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        names = list(node.input)
        if node.op_type == "BatchNormalization":
            roles = dict(zip(("x", "scale", "bias", "mean", "var"), names))
        else:  # Conv, ConvTranspose: X, W, B; Gemm: A, B, C
            roles = dict(zip(("x", "weight", "bias"), names))
        arrays = {r: inits[n] for r, n in roles.items() if r != "x" and n in inits}
        if "weight" not in arrays and node.op_type != "BatchNormalization":
            raise ValueError(f"{path}: {node.op_type} {node.name!r} has no weight initializer")
        layers.append((node.op_type, arrays, attrs))
    return layers


def _copy(param: torch.Tensor, value: np.ndarray, what: str) -> None:
    if tuple(param.shape) != tuple(value.shape):
        raise ValueError(f"{what}: shape {tuple(value.shape)} in the ONNX file, {tuple(param.shape)} in the network")
    with torch.no_grad():
        param.copy_(torch.from_numpy(np.array(value, dtype=np.float32)))  # a writable copy


def load_from_onnx(module: nn.Module, path: Path) -> nn.Module:
    """Fill `module`'s weighted layers from the ONNX file's layers, in order (see module doc)."""
    layers = onnx_layers(path)
    targets = [m for m in module.modules() if isinstance(m, _TORCH_LAYERS)]
    i = 0
    for t, target in enumerate(targets):
        what = f"{path.name} layer {i} -> {type(target).__name__} #{t}"
        if isinstance(target, _BATCHNORMS):
            if i < len(layers) and layers[i][0] == "BatchNormalization":
                arrays = layers[i][1]
                _copy(target.weight, arrays["scale"], what)
                _copy(target.bias, arrays["bias"], what)
                _copy(target.running_mean, arrays["mean"], what)
                _copy(target.running_var, arrays["var"], what)
                target.eps = float(layers[i][2].get("epsilon", 1e-5))
                i += 1
            continue  # folded: handled with the conv before it
        if i >= len(layers):
            raise ValueError(f"{path.name}: {len(layers)} weighted layers, the network has more")
        op, arrays, attrs = layers[i]
        expected = {nn.Conv2d: "Conv", nn.ConvTranspose2d: "ConvTranspose", nn.Linear: "Gemm"}[type(target)]
        if op != expected:
            raise ValueError(f"{what}: ONNX has {op}, the network {expected}")
        weight = arrays["weight"]
        if op == "Gemm" and not attrs.get("transB", 0):
            weight = weight.T
        _copy(target.weight, weight, what)
        bias = arrays.get("bias")
        nxt = targets[t + 1] if t + 1 < len(targets) else None
        folded = isinstance(nxt, _BATCHNORMS) and not (i + 1 < len(layers) and
                                                       layers[i + 1][0] == "BatchNormalization")
        if folded:  # the BatchNorm after this layer is folded into it: the identity
            with torch.no_grad():
                nxt.weight.fill_(1.0)
                nxt.bias.zero_()
                nxt.running_mean.zero_()
                nxt.running_var.fill_(1.0 - nxt.eps)
        if target.bias is not None:
            _copy(target.bias, bias if bias is not None else np.zeros(target.bias.shape, np.float32), what)
        elif bias is not None:
            if not folded:
                raise ValueError(f"{what}: the ONNX layer has a bias and the network has no place for it")
            _copy(nxt.bias, bias, what)
        i += 1
    if i != len(layers):
        raise ValueError(f"{path.name}: {len(layers) - i} ONNX layers left over; not the same architecture")
    return module.eval()


def torch_generator(path: Path, latent_dim: int, resolution: int) -> Generator:
    """training.models.Generator with generator.onnx's weights (width read from its first layer)."""
    first = onnx_layers(path)[0][1]["weight"]  # (latent_dim, width * 2^(levels-1), 4, 4)
    levels = int(np.log2(resolution)) - 2
    width = first.shape[1] // 2 ** (levels - 1)
    return load_from_onnx(Generator(latent_dim, resolution, width), path)


def torch_encoder(path: Path, latent_dim: int, resolution: int) -> Encoder:
    """training.models.Encoder with encoder.onnx's weights (width read from its first conv)."""
    width = onnx_layers(path)[0][1]["weight"].shape[0]  # (width, 3, 4, 4)
    return load_from_onnx(Encoder(latent_dim, resolution, width), path)


def torch_oracle(path: Path, n_attributes: int, resolution: int) -> Oracle:
    """training.models.Oracle with classifier.onnx's weights (width read from its first conv)."""
    width = onnx_layers(path)[0][1]["weight"].shape[0]  # (width, 3, 4, 4)
    return load_from_onnx(Oracle(n_attributes, resolution, width), path)
