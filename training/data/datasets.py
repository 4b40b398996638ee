"""Rendered training data: endless deterministic batches from the renderer.

Batch `i` of stream `seed` is always the same faces, so a resumed run sees the
data it would have seen. Held-out evaluation faces come from a disjoint seed
range (HELD_OUT_SEED) that training never touches.
"""
from __future__ import annotations

import numpy as np
import torch

from training.data import renderer

HELD_OUT_SEED = 1_000_000_007  # evaluation faces; training streams use seeds < 2**31 below it


def rendered_batch(seed: int, index: int, batch: int, resolution: int, correlated: bool = True):
    """Batch `index` of stream `seed`.

    Returns pixels (N, R, R, 3) uint8 torch tensor, attributes (N, A) float32
    torch tensor, and the renderer's Faces (ground truth, identity included).
    """
    faces = renderer.sample_faces(seed * 1_000_003 + index, batch, correlated=correlated)
    pixels = renderer.render(faces, size=resolution)
    return torch.from_numpy(pixels), torch.from_numpy(faces.attributes), faces


def held_out(n: int, resolution: int, correlated: bool = True, stream: int = 0):
    """Held-out rendered faces: (pixels (N, R, R, 3) uint8 numpy, Faces).

    stream 0 is shared by the oracle's accuracy, the CRG ranges and the reconstruction
    table; the evaluation's edits use streams 1 and 2, which no step fits anything on.
    """
    faces = renderer.sample_faces(HELD_OUT_SEED + stream, n, correlated=correlated)
    return renderer.render(faces, size=resolution), faces


def latents(seed: int, n: int, dim: int) -> np.ndarray:
    """z: (n, dim) float32 ~ N(0, I), deterministic for `seed`."""
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
