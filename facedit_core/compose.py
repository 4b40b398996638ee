"""Edit composition and conditional manipulation (InterFaceGAN, sec. 2.2).

To edit attribute n while keeping attributes c_1..c_k fixed, move along the
component of n orthogonal to span(c_1..c_k), renormalised to unit length:
    n' = (n - Q Q^T n) / |n - Q Q^T n|,  Q an orthonormal basis of the c_i.
Several edits add up: delta = sum_i s_i n_i'.
"""
from __future__ import annotations

import numpy as np

from facedit_core.errors import InvalidArgument

MIN_PROJECTED_NORM = 0.05  # below this the edit is (almost) entirely a kept attribute


def project_out(direction: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, float]:
    """direction (D,) unit, kept (K, D) -> (unit direction orthogonal to kept, |residual|)."""
    if len(kept) == 0:
        return direction, 1.0
    q, _ = np.linalg.qr(kept.T.astype(np.float64))  # (D, K) orthonormal
    residual = direction - q @ (q.T @ direction)
    norm = float(np.linalg.norm(residual))
    if norm < MIN_PROJECTED_NORM:
        raise InvalidArgument(f"the edit direction lies within the kept attributes' directions "
                              f"(|projection residual| = {norm:.3f}); keep fewer attributes")
    return (residual / norm).astype(np.float32), norm


def compose(vectors: list[np.ndarray], strengths: list[float], kept: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Unit vectors (D,) with strengths and kept directions (K, D) -> (delta (D,), projected norms)."""
    dim = vectors[0].shape[0] if vectors else kept.shape[1]
    delta = np.zeros(dim, dtype=np.float64)
    norms = []
    for v, s in zip(vectors, strengths):
        projected, norm = project_out(v, kept)
        delta += s * projected
        norms.append(norm)
    return delta.astype(np.float32), norms
