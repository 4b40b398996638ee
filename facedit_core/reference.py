"""Directions from reference images (CRG, Dogan et al., sec. 3.3-3.4 and 4.4): the maths.

Shared by the offline CRG step (training, reference pairs rendered
with and without an attribute) and the gateway's CreateDirection (a client's own
positive and negative images), so both make and measure directions the same way.
Pure numpy; no I/O.

Direction (eq. 3 of the paper, averaged): with encoded latents of positive images
(attribute present) P (p, D) and negative images (absent) N (n, D),

    d = (mean(P) - mean(N)) / |mean(P) - mean(N)|

One positive and one negative image give exactly the paper's single-pair direction
(z_with - z_without) / |z_with - z_without|. For k pairs (p_i, n_i) the normalised
mean of the per-pair differences equals the normalised difference of the means,
so the same function serves paired and unpaired sets.

Projections (sec. 3.4): the scalar projections z . d of labelled faces form two
Gaussians, one per label, each summarised by its mean and standard deviation.
Since strength s moves a latent by z' = z + s d (eq. 4 with a unit d), it moves
its projection by exactly s, so the Gaussians are in strength units.

Conservative strength range (sec. 4.4: stay inside the mean +/- 2 sd bulk of
the labelled faces): with gap = mu_pos - mu_neg > 0,

    strength_max =  clip(min(gap, gap + 2 (sd_pos - sd_neg)), gap / 2, limit)
    strength_min = -clip(min(gap, gap + 2 (sd_neg - sd_pos)), gap / 2, limit)

i.e. adding the attribute moves the mean negative face at most to the mean
positive face (gap), and less when the negatives are more spread than the
positives, so that a negative face at the top of its bulk (mu_neg + 2 sd_neg)
lands no further than the top of the positives' bulk (mu_pos + 2 sd_pos) - but
never less than half the gap, which takes the mean negative face to the midpoint
between the means (the least edit that changes the label of a typical face).
Removing it is the mirror image (mean positive face towards the mean negative
face; the bottom of the positives' bulk no lower than the bottom of the
negatives'). The hard limit caps both. A direction whose labelled Gaussians are
not in order (gap <= 0) gets no recommended range: (0, 0).
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from facedit_core.errors import InvalidArgument
from facedit_core.records import OFFSET_MEANING

SPREAD_SDS = 2.0            # the bulk of a Gaussian: mean +/- 2 sd (paper, sec. 4.4)
MIN_DIFFERENCE_NORM = 1e-6  # |mean(P) - mean(N)| below this: the sets encode alike, no direction
STRENGTH_MEANING = OFFSET_MEANING  # what "strength" means for these directions: as for every latent direction
RANGE_RULE = ("facedit_core.reference.strength_range: gap = mu_pos - mu_neg of the projections; "
              "strength_max = clip(min(gap, gap + 2 (sd_pos - sd_neg)), gap / 2, limit), "
              "strength_min = -clip(min(gap, gap + 2 (sd_neg - sd_pos)), gap / 2, limit); (0, 0) if gap <= 0")


@dataclasses.dataclass(frozen=True)
class Gaussian:
    """Mean and standard deviation (ddof=1; 0 for a single value) of n projections."""

    mean: float
    std: float
    count: int

    @classmethod
    def fit(cls, values: np.ndarray) -> "Gaussian":
        values = np.asarray(values, dtype=np.float64).ravel()
        if len(values) == 0:
            raise ValueError("a Gaussian needs at least one value")
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        return cls(mean=float(values.mean()), std=std, count=int(len(values)))


def _latents(z: np.ndarray, what: str) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or len(z) == 0:
        raise InvalidArgument(f"{what}: expected (N >= 1, latent_dim) latents, got shape {list(z.shape)}")
    if not np.isfinite(z).all():
        raise InvalidArgument(f"{what}: latents contain NaN or infinity")
    return z


def direction(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, float]:
    """Latents (p, D) with and (n, D) without the attribute -> (unit direction (D,) float32,
    |mean difference| before normalising). Raises InvalidArgument when the sets encode alike."""
    p, n = _latents(positive, "positive"), _latents(negative, "negative")
    if p.shape[1] != n.shape[1]:
        raise InvalidArgument(f"positive latents have length {p.shape[1]}, negative {n.shape[1]}")
    diff = p.mean(axis=0) - n.mean(axis=0)
    norm = float(np.linalg.norm(diff))
    if not norm > MIN_DIFFERENCE_NORM:
        raise InvalidArgument("the positive and negative images encode to the same mean latent; "
                              "use images that differ in the attribute")
    return (diff / norm).astype(np.float32), norm


def pair_directions(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
    """Paired latents (k, D), row i = the same face with / without the attribute ->
    (k, D) float32 unit single-pair directions (eq. 3); a pair that encodes alike gives a zero row."""
    p, n = _latents(positive, "positive"), _latents(negative, "negative")
    if p.shape != n.shape:
        raise InvalidArgument(f"pairs need the same shapes, got {list(p.shape)} and {list(n.shape)}")
    diff = p - n
    norms = np.linalg.norm(diff, axis=1, keepdims=True)
    return np.where(norms > MIN_DIFFERENCE_NORM, diff / np.maximum(norms, MIN_DIFFERENCE_NORM), 0).astype(np.float32)


def project(z: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """(N, D) latents -> (N,) scalar projections on the unit direction (D,)."""
    return _latents(z, "latents") @ np.asarray(unit, dtype=np.float64)


def projection_gaussians(positive: np.ndarray, negative: np.ndarray, unit: np.ndarray) -> tuple[Gaussian, Gaussian]:
    """The two Gaussians (positive, negative) of the labelled latents' projections on `unit`."""
    return Gaussian.fit(project(positive, unit)), Gaussian.fit(project(negative, unit))


def strength_range(positive: Gaussian, negative: Gaussian, limit: float) -> tuple[float, float]:
    """(strength_min <= 0, strength_max >= 0) by the conservative rule of the module docstring."""
    if not (math.isfinite(limit) and limit > 0):
        raise ValueError(f"strength limit must be a positive number, got {limit}")
    gap = positive.mean - negative.mean
    if not gap > 0:
        return 0.0, 0.0
    spread = SPREAD_SDS * (positive.std - negative.std)
    up = min(limit, max(gap / 2, min(gap, gap + spread)))
    down = min(limit, max(gap / 2, min(gap, gap - spread)))
    return -float(down), float(up)


def separability(positive_projections: np.ndarray, negative_projections: np.ndarray) -> dict:
    """How well the projections separate the labels.

    midpoint_accuracy: share of faces on their label's side of the midpoint between
    the two means (positives above, negatives at or below); d_prime: gap / pooled sd
    (inf-safe: 0 sd gives a large finite value)."""
    p = np.asarray(positive_projections, dtype=np.float64).ravel()
    n = np.asarray(negative_projections, dtype=np.float64).ravel()
    mid = (p.mean() + n.mean()) / 2
    correct = int((p > mid).sum() + (n <= mid).sum())
    pooled = math.sqrt(((p.var(ddof=1) if len(p) > 1 else 0.0) + (n.var(ddof=1) if len(n) > 1 else 0.0)) / 2)
    d_prime = (p.mean() - n.mean()) / max(pooled, 1e-9)
    return {"midpoint_accuracy": correct / (len(p) + len(n)), "midpoint": float(mid),
            "d_prime": float(np.clip(d_prime, -1e6, 1e6))}


def describe(positive_latents: np.ndarray, negative_latents: np.ndarray, unit: np.ndarray,
             limit: float) -> dict:
    """Everything a direction record stores about labelled latents on `unit`:
    the two Gaussians, the recommended range and the separability, as flat floats."""
    return describe_projections(project(positive_latents, unit), project(negative_latents, unit), limit)


def describe_projections(pos_proj: np.ndarray, neg_proj: np.ndarray, limit: float) -> dict:
    """`describe` from the labelled faces' projections (N,) in strength units."""
    pos, neg = Gaussian.fit(pos_proj), Gaussian.fit(neg_proj)
    lo, hi = strength_range(pos, neg, limit)
    sep = separability(pos_proj, neg_proj)
    return {"positive": pos, "negative": neg, "strength_min": lo, "strength_max": hi,
            "metrics": {"positive_mean": pos.mean, "positive_std": pos.std, "positive_count": float(pos.count),
                        "negative_mean": neg.mean, "negative_std": neg.std, "negative_count": float(neg.count),
                        "gap": pos.mean - neg.mean, "midpoint_accuracy": sep["midpoint_accuracy"],
                        "d_prime": sep["d_prime"]}}

