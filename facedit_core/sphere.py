"""Maths on the unit sphere of FaceNet embeddings (ISTRC, Li & Wang): slerp, spherical
(weighted) mean, arithmetic a - b + c, and the constant-step gradient walk of an edit.

Every embedding is a unit row vector e (E,) float; functions take and return float64 unless
said otherwise and renormalise their results to |e| = 1. Training (training/istrc.py) and
serving (services/encoder, services/gateway) use these same functions.
"""
from __future__ import annotations

import numpy as np

_EPS = 1e-12


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of x (..., E) scaled to unit length; a zero row raises ValueError."""
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norm < _EPS):
        raise ValueError("cannot normalise a zero vector")
    return x / norm


def angle(a: np.ndarray, b: np.ndarray) -> float:
    """Great-circle distance (radians, 0..pi) between unit vectors a and b."""
    return float(np.arccos(np.clip(np.dot(a, b), -1.0, 1.0)))


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation (Shoemake; ISTRC eq. 2): t = 0 gives a, t = 1 gives b
    (exactly), t = 0.5 the midpoint of the great-circle arc. Antipodal a, b have no unique
    arc: ValueError."""
    a, b = normalise(a), normalise(b)
    theta = angle(a, b)
    if theta < 1e-7:  # the same point: the chord is the arc
        return normalise((1.0 - t) * a + t * b)
    if np.pi - theta < 1e-6:
        raise ValueError("the two faces' embeddings are antipodal: no unique arc between them")
    s = np.sin(theta)
    return np.sin((1.0 - t) * theta) / s * a + np.sin(t * theta) / s * b


def log_map(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Tangent vector at p pointing to q, of length angle(p, q)."""
    theta = angle(p, q)
    if theta < 1e-12:
        return np.zeros_like(p, dtype=np.float64)
    direction = q - np.cos(theta) * p
    return theta * direction / np.linalg.norm(direction)


def exp_map(p: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Walk from p along the tangent vector v for |v| radians."""
    n = float(np.linalg.norm(v))
    if n < 1e-12:
        return np.asarray(p, dtype=np.float64).copy()
    return normalise(np.cos(n) * p + np.sin(n) * v / n)


def mean(points: np.ndarray, weights: np.ndarray | None = None, iterations: int = 50,
         tol: float = 1e-10) -> np.ndarray:
    """Weighted spherical (Karcher / Frechet) mean of unit rows points (N, E): the point that
    minimises sum w_i angle(x, p_i)^2, found by gradient steps in the tangent space starting at
    the normalised Euclidean mean. With two points and weights (1 - t, t) it is slerp(a, b, t).
    Weights: (N,) >= 0, not all zero (normalised to sum 1); default equal."""
    points = normalise(points)
    w = np.full(len(points), 1.0 / len(points)) if weights is None else np.asarray(weights, np.float64)
    if w.shape != (len(points),) or np.any(w < 0) or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("weights: one finite value >= 0 per face, not all zero")
    w = w / w.sum()
    x = normalise(w @ points)
    for _ in range(iterations):
        step = sum(wi * log_map(x, p) for wi, p in zip(w, points))
        x = exp_map(x, step)
        if np.linalg.norm(step) < tol:
            break
    return x


def arithmetic(a: np.ndarray, b: np.ndarray, c: np.ndarray, spherical: bool = True) -> np.ndarray:
    """a - b + c on the sphere.

    spherical=True: the move from b to a (the tangent vector log_b(a)) is parallel-transported
    along the great circle from b to c and applied at c: exp_c(PT_{b->c} log_b(a)). So a = b
    gives c, b = c gives a, and the result moves as far from c as a is from b.
    spherical=False: the linear (a - b + c) / |a - b + c| of DCGAN-style latent arithmetic.
    """
    a, b, c = normalise(a), normalise(b), normalise(c)
    if not spherical:
        return normalise(a - b + c)
    v = log_map(b, a)
    u = log_map(b, c)
    theta = float(np.linalg.norm(u))
    if theta > 1e-12:  # parallel transport along the geodesic b -> c
        w = log_map(c, b)
        v = v - (u @ v) / theta**2 * (u + w)
    return exp_map(c, v)


def tangent(e: np.ndarray, g: np.ndarray) -> np.ndarray:
    """g (E,) projected on the tangent plane of the sphere at unit e."""
    return g - (g @ e) * e


def walk(e: np.ndarray, gradient, strength: float, step: float, keep=None,
         max_steps: int = 10_000) -> tuple[np.ndarray, dict]:
    """The ISTRC edit: gradient steps on a classifier logit with a constant step length and
    renormalisation to the sphere after every step.

    e: start (E,) unit. gradient: e (E,) -> d logit / d e (E,) (a constant w for a linear
    classifier). strength: signed path length; |strength| / step steps of length `step` (the
    last one shorter if it does not divide), each e <- (e + s * g_t / |g_t|) / |...| where g_t is
    the gradient projected on the tangent plane at e (and off the tangent-projected gradients
    of `keep` (K, E) - the kept classifiers - by Gram-Schmidt) and s = sign(strength) * step.
    keep may also be a function e (E,) -> (K, E): the kept classifiers' gradients at e, for
    non-linear (MLP) classifiers whose gradient changes along the walk.
    One step turns e by atan(s), so the arc walked is about |strength| radians.
    Stops early when the usable gradient vanishes (the classifier's optimum on the sphere).
    Returns (e' (E,), {"steps": n, "arc": radians from start to end, "stopped_early": bool}).
    """
    e0 = normalise(e)
    x = e0.copy()
    if not np.isfinite(strength) or step <= 0:
        raise ValueError("strength must be finite and step > 0")
    total = abs(float(strength))
    n_full = int(np.floor(total / step + 1e-6))  # 0.6 / 0.05 is 11.999...; a float32 0.6 is 0.6000000238
    rest = total - n_full * step
    lengths = [step] * n_full + ([rest] if rest > 1e-6 * step else [])
    if len(lengths) > max_steps:
        raise ValueError(f"{len(lengths)} steps is over the limit of {max_steps}")
    sign = 1.0 if strength >= 0 else -1.0
    stopped = False
    done = 0
    for length in lengths:
        g = tangent(x, np.asarray(gradient(x), np.float64))
        kept = keep(x) if callable(keep) else keep
        if kept is not None and len(kept):
            basis: list[np.ndarray] = []
            for k in kept:
                kt = tangent(x, np.asarray(k, np.float64))
                kt = kt - sum((kt @ u) * u for u in basis)
                nk = np.linalg.norm(kt)
                if nk > 1e-9:
                    basis.append(kt / nk)
            g = g - sum((g @ u) * u for u in basis)
        ng = np.linalg.norm(g)
        if ng < 1e-9:
            stopped = True
            break
        x = normalise(x + sign * length * g / ng)
        done += 1
    return x, {"steps": done, "arc": angle(e0, x), "stopped_early": stopped}
