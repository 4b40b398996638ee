"""Latents from seeds: the one definition every service and client shares."""
from __future__ import annotations

import numpy as np

from services.common.errors import InvalidArgument


def from_seed(seed: int, latent_dim: int) -> np.ndarray:
    """z: (latent_dim,) float32 ~ N(0, I), the same for the same seed everywhere."""
    if seed < 0:
        raise InvalidArgument(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(seed).standard_normal(latent_dim, dtype=np.float32)
