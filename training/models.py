"""Networks of a pack: DCGAN generator and discriminator, the CRG encoder and the
attribute oracle, plus the export wrappers that put pixel
conversion inside the ONNX graph (uint8 NHWC at the edges, nothing to do in
Python at serving time).

Shapes: z (N, latent_dim) float32; images (N, 3, R, R) float32 in [-1, 1];
pixels (N, R, R, 3) uint8. `generate` and `encode` run a generator / an encoder on numpy
arrays in batches.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def _levels(resolution: int) -> int:
    """Number of 2x up/down-sampling stages between 4x4 and `resolution`."""
    levels = int(math.log2(resolution)) - 2
    if resolution < 16 or 4 * 2**levels != resolution:
        raise ValueError(f"resolution must be a power of two >= 16, got {resolution}")
    return levels


class Generator(nn.Module):
    """DCGAN generator: z (N, latent_dim) -> images (N, 3, R, R) in [-1, 1]."""

    def __init__(self, latent_dim: int, resolution: int, width: int = 64):
        super().__init__()
        levels = _levels(resolution)
        ch = width * 2 ** (levels - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, ch, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(levels - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.latent_dim = latent_dim

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z[:, :, None, None])


def _down_stack(resolution: int, width: int, batchnorm: bool) -> tuple[nn.Sequential, int]:
    """Strided convs from (N, 3, R, R) to (N, C, 4, 4); returns the stack and C."""
    levels = _levels(resolution)
    layers: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    ch = width
    for _ in range(levels - 1):
        layers.append(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(ch * 2))
        layers.append(nn.LeakyReLU(0.2, True))
        ch *= 2
    return nn.Sequential(*layers), ch


class Discriminator(nn.Module):
    """DCGAN discriminator: images (N, 3, R, R) -> logits (N,)."""

    def __init__(self, resolution: int, width: int = 64):
        super().__init__()
        self.features, ch = _down_stack(resolution, width, batchnorm=True)
        self.head = nn.Conv2d(ch, 1, 4, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).flatten()


class Encoder(nn.Module):
    """CRG encoder: images (N, 3, R, R) -> z (N, latent_dim)."""

    def __init__(self, latent_dim: int, resolution: int, width: int = 64):
        super().__init__()
        self.features, ch = _down_stack(resolution, width, batchnorm=True)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(ch * 16, 256), nn.LeakyReLU(0.2, True), nn.Linear(256, latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Oracle(nn.Module):
    """Attribute classifier: images (N, 3, R, R) -> logits (N, n_attributes)."""

    def __init__(self, n_attributes: int, resolution: int, width: int = 32):
        super().__init__()
        self.features, ch = _down_stack(resolution, width, batchnorm=True)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(ch * 16, 128), nn.LeakyReLU(0.2, True), nn.Linear(128, n_attributes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def pixels_to_images(pixels: torch.Tensor) -> torch.Tensor:
    """(N, R, R, 3) uint8 -> (N, 3, R, R) float32 in [-1, 1]."""
    return pixels.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1.0


def images_to_pixels(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, R, R) float in [-1, 1] -> (N, R, R, 3) uint8, rounded to nearest."""
    scaled = torch.clamp((images + 1.0) * 127.5 + 0.5, 0.0, 255.0)
    return torch.floor(scaled).to(torch.uint8).permute(0, 2, 3, 1)


class GeneratorExport(nn.Module):
    """Served generator: z (N, D) float32 -> pixels (N, R, R, 3) uint8."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.generator = generator

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return images_to_pixels(self.generator(z))


class PixelsIn(nn.Module):
    """Served encoder/classifier: pixels (N, R, R, 3) uint8 -> model(images).

    With `sigmoid`, the output is probabilities instead of logits.
    """

    def __init__(self, model: nn.Module, sigmoid: bool = False):
        super().__init__()
        self.model = model
        self.sigmoid = sigmoid

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model(pixels_to_images(pixels))
        return torch.sigmoid(out) if self.sigmoid else out


@torch.no_grad()
def generate(g: nn.Module, z: np.ndarray, batch: int = 500) -> np.ndarray:
    """z (N, D) -> faces (N, R, R, 3) uint8, generated in batches."""
    return np.concatenate([images_to_pixels(g(torch.from_numpy(np.ascontiguousarray(z[i:i + batch],
                                                                                    np.float32)))).numpy()
                           for i in range(0, len(z), batch)])


@torch.no_grad()
def encode(e: nn.Module, pixels: np.ndarray, batch: int = 500) -> np.ndarray:
    """Faces (N, R, R, 3) uint8 -> (N, D) float32 latents, encoded in batches."""
    return np.concatenate([e(pixels_to_images(torch.from_numpy(pixels[i:i + batch]))).numpy()
                           for i in range(0, len(pixels), batch)])
