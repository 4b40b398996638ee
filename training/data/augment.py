"""Random geometric and colour jitter of face images, as a real photo's alignment would leave it.

Used by the CRG encoder's image cycle when a pack has no face dataset on disk: generated faces,
flipped, shifted, scaled, rotated and colour-jittered, stand in for aligned real photos.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def jitter(images: torch.Tensor, generator: torch.Generator, shift: float = 0.06, scale: float = 0.08,
           degrees: float = 8.0, colour: float = 0.12) -> torch.Tensor:
    """images: (N, 3, R, R) float32 in [-1, 1] -> same shape, each image jittered independently.

    shift: max translation as a fraction of the side; scale: max relative zoom; degrees: max
    rotation; colour: max relative change of brightness, contrast and per-channel gain.
    """
    n = images.shape[0]

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, *shape, generator=generator)

    angle = uniform(-degrees, degrees) * math.pi / 180
    zoom = uniform(1 - scale, 1 + scale)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, uniform(-shift, shift) * 2], 1),
                         torch.stack([sin * flip, cos, uniform(-shift, shift) * 2], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = uniform(1 - colour, 1 + colour, 1, 1, 1)
    gain = uniform(1 - colour / 2, 1 + colour / 2, 3, 1, 1)
    brightness = uniform(-colour, colour, 1, 1, 1)
    return torch.clamp((out - mean) * contrast * gain + mean + brightness, -1.0, 1.0)
