"""Latents: from seeds (the one definition every service and client shares) and their checks."""
from __future__ import annotations

import numpy as np

from facedit_core.errors import InvalidArgument


def from_seed(seed: int, latent_dim: int) -> np.ndarray:
    """z: (latent_dim,) float32 ~ N(0, I), the same for the same seed everywhere."""
    if seed < 0:
        raise InvalidArgument(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(seed).standard_normal(latent_dim, dtype=np.float32)


def check(z: np.ndarray, latent_dim: int, what: str = "latent") -> np.ndarray:
    """Accept (D,) or (N, D) float32 finite latents; return (N, D) float32."""
    if z.dtype != np.float32:
        raise InvalidArgument(f"{what}: must be float32, got {z.dtype}")
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != latent_dim:
        raise InvalidArgument(f"{what}: expected length {latent_dim} (this pack's latent size), "
                              f"got shape {list(z.shape)}")
    if z.shape[0] == 0:
        raise InvalidArgument(f"{what}: no latents given")
    if not np.isfinite(z).all():
        raise InvalidArgument(f"{what}: contains NaN or infinity")
    return z
