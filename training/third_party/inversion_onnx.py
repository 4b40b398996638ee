"""The two ONNX graphs of faithful inversion (facedit_core/inversion.py), built from a DCGAN generator
(training.models.Generator) and the ported FaceNet by `make setup`:

- `<pack>_generator_modulated.onnx`: z_modulation (N, D + M) float32 -> pixels (N, R, R, 3) uint8. The
  generator with a per-face modulation of every BatchNorm layer's output, x * (1 + scale) + shift per
  channel (M = 2 x the channels of all BatchNorm layers). Zero modulation renders exactly what the
  plain generator renders. z and the modulation travel as one row so the generator service batches
  faces with different modulations like any other rows.
- `<pack>_inversion.onnx`: one optimisation step's loss and gradients for one face (batch 1):
  z (1, D), modulation (1, M), target (1, R, R, 3) uint8, target_embedding (1, 512), identity_weight
  (1,) -> loss (), pixel_loss (), identity (), grad_z (1, D), grad_modulation (1, M).
  pixel_loss is the mean squared error of the rendering against the target in [-1, 1]; identity is
  the FaceNet cosine between the rendering (upsampled bilinearly to 160 px, prewhitened) and
  target_embedding; loss = pixel_loss + identity_weight * (1 - identity).

ONNX has no automatic differentiation, so the gradient graph is traced here: torch.func computes the
gradients, make_fx records them as plain aten operators (the backward of a convolution written as
a transposed convolution, the bilinear upsampling as two matrix products, whose backward is again a
matrix product), and the ONNX exporter translates that graph. Serving then needs ONNX Runtime only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.models import Generator
from training.onnx_io import export_onnx, strip_metadata

FACENET_SIZE = 160
EMBEDDING = 512


def modulation_size(generator: Generator) -> int:
    """M: a scale and a shift per channel of every BatchNorm layer."""
    return 2 * sum(m.num_features for m in generator.net if isinstance(m, torch.nn.BatchNorm2d))


def modulated(generator: Generator, z: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
    """z (N, D), modulation (N, M) -> images (N, 3, R, R) in [-1, 1]."""
    x, offset = z[:, :, None, None], 0
    for layer in generator.net:
        x = layer(x)
        if isinstance(layer, torch.nn.BatchNorm2d):
            c = layer.num_features
            scale = modulation[:, offset:offset + c, None, None]
            shift = modulation[:, offset + c:offset + 2 * c, None, None]
            x = x * (1.0 + scale) + shift
            offset += 2 * c
    return x


class ModulatedExport(torch.nn.Module):
    """z_modulation (N, D + M) float32 -> pixels (N, R, R, 3) uint8 (as GeneratorExport rounds)."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator
        self.latent_dim = generator.latent_dim

    def forward(self, z_modulation: torch.Tensor) -> torch.Tensor:
        images = modulated(self.generator, z_modulation[:, :self.latent_dim], z_modulation[:, self.latent_dim:])
        scaled = torch.clamp((images + 1.0) * 127.5 + 0.5, 0.0, 255.0)
        return torch.floor(scaled).to(torch.uint8).permute(0, 2, 3, 1)


def upsampling_matrix(size_in: int, size_out: int = FACENET_SIZE) -> torch.Tensor:
    """(size_out, size_in) float32: U @ x @ U.T is bilinear upsampling (half-pixel centres, as
    F.interpolate(..., align_corners=False) and PIL's bilinear resize)."""
    eye = torch.eye(size_in)[None, None]
    return F.interpolate(eye, size=(size_out, size_in), mode="bilinear", align_corners=False)[0, 0]


def _embed(facenet: torch.nn.Module, images: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """images (N, 3, R, R) in [-1, 1] -> (N, 512) unit FaceNet embeddings (prewhitened as facenet.onnx)."""
    x = up @ ((images + 1.0) * 127.5) @ up.T
    centred = x - x.mean(dim=(1, 2, 3), keepdim=True)
    count = x.shape[1] * x.shape[2] * x.shape[3]
    std = centred.square().mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp(min=1.0 / float(np.sqrt(count)))
    return F.normalize(facenet(centred / std), dim=1)


def _convolution_backward(grad_out, inp, weight, bias_sizes, stride, padding, dilation, transposed,
                          output_padding, groups, output_mask):
    """aten.convolution_backward for the input only (weights are constants here), as a convolution."""
    if output_mask[1] or output_mask[2]:
        raise NotImplementedError("only the gradient of a convolution's input is traced")
    aten = torch.ops.aten
    if transposed:
        grad_in = aten.convolution(grad_out, weight, None, stride, padding, dilation, False, [0] * len(stride), groups)
    else:
        k = weight.shape[2:]
        extra = [inp.shape[2 + i] - ((grad_out.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                     + dilation[i] * (k[i] - 1) + 1) for i in range(len(stride))]
        grad_in = aten.convolution(grad_out, weight, None, stride, padding, dilation, True, extra, groups)
    return grad_in, None, None


def step_function(generator: Generator, facenet: torch.nn.Module):
    """f(z, modulation, target, target_embedding, identity_weight) -> (loss, pixel_loss, identity,
    grad_z, grad_modulation), in plain torch (the reference the ONNX graph is checked against)."""
    up = upsampling_matrix(_resolution(generator))

    def loss(z, modulation, target_images, target_embedding, identity_weight):
        images = modulated(generator, z, modulation)
        pixel = F.mse_loss(images, target_images)
        identity = (_embed(facenet, images, up) * target_embedding).sum()
        return pixel + identity_weight[0] * (1.0 - identity), (pixel, identity)

    def step(z, modulation, target, target_embedding, identity_weight):
        target_images = target.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0
        grads, (total, (pixel, identity)) = torch.func.grad_and_value(loss, argnums=(0, 1), has_aux=True)(
            z, modulation, target_images, target_embedding, identity_weight)
        return total, pixel, identity, grads[0], grads[1]
    return step


def _resolution(generator: Generator) -> int:
    with torch.no_grad():
        return int(generator(torch.zeros(1, generator.latent_dim)).shape[-1])


def example_inputs(generator: Generator, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """One face's inputs of the step graph (random, for tracing and parity checks)."""
    g = torch.Generator().manual_seed(seed)
    r, d, m = _resolution(generator), generator.latent_dim, modulation_size(generator)
    return (torch.randn(1, d, generator=g), 0.01 * torch.randn(1, m, generator=g),
            torch.randint(0, 256, (1, r, r, 3), generator=g, dtype=torch.uint8),
            F.normalize(torch.randn(1, EMBEDDING, generator=g), dim=1), torch.tensor([0.1]))


INPUTS = ["z", "modulation", "target", "target_embedding", "identity_weight"]
OUTPUTS = ["loss", "pixel_loss", "identity", "grad_z", "grad_modulation"]


def export_step(generator: Generator, facenet: torch.nn.Module, path: Path) -> None:
    """Trace the step function (make_fx, gradients as plain operators) and write it as ONNX."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    for p in [*generator.parameters(), *facenet.parameters()]:
        p.requires_grad_(False)
    generator.eval(), facenet.eval()
    table = dict(core_aten_decompositions())
    table[torch.ops.aten.convolution_backward.default] = _convolution_backward
    traced = make_fx(step_function(generator, facenet), decomposition_table=table)(*example_inputs(generator))

    class Traced(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.graph_module = traced

        def forward(self, *inputs):
            return self.graph_module(*inputs)

    torch.onnx.export(Traced().eval(), example_inputs(generator), str(path), dynamo=True, opset_version=18, verbose=False,
                      input_names=INPUTS, output_names=OUTPUTS, external_data=False)
    strip_metadata(path)


def export_modulated(generator: Generator, path: Path) -> None:
    """The modulated generator with a dynamic batch axis."""
    width = generator.latent_dim + modulation_size(generator)
    export_onnx(ModulatedExport(generator.eval()), torch.zeros(2, width), path, "z_modulation", "pixels")


def write(generator: Generator, facenet: torch.nn.Module, modulated_path: Path, step_path: Path) -> None:
    """Both files, each written to a temporary name first."""
    for path, export in ((modulated_path, lambda p: export_modulated(generator, p)),
                         (step_path, lambda p: export_step(generator, facenet, p))):
        tmp = path.with_suffix(".tmp")
        export(tmp)
        tmp.replace(path)
