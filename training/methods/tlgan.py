"""The `tlgan` step: TL-GAN feature axes (Guan, "Transparent Latent-space GAN"): regression from latents to
attributes, then Gram-Schmidt in a priority order.

(z, y) pairs: `tlgan_samples` latents, y = the oracle's probabilities of the generated faces.
Per attribute, a linear model y ~ z (`tlgan_model` = "linear": least squares on y;
"logistic": a GLM on the labels y > 0.5) gives a feature axis: its coefficient vector,
normalised. Editing is z -> z + s * F, s in latent units as for InterFaceGAN.

Disentangling ("locking"): Gram-Schmidt in a priority order makes each axis orthogonal to
the axes before it. At request time this is the `keep` list of an edit with method
METHOD_TLGAN: the directions service projects the edited axis off the kept (locked) axes
- the same Gram-Schmidt step, in the user's order. Offline, the figures report the axes'
cosine matrix before and after Gram-Schmidt in the config's order `tlgan_order`, and the
oracle probability along each axis (mean over held-out latents at strengths -3..3).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression

from training import checkpoints
from training.config import PackConfig
from training.data.datasets import latents
from training.generators import gan
from training.labels import oracle, source
from training.labels.oracle import score_latents
from training.methods import direction_sets

_LATENT_SEED = 6
SWEEP = (-3.0, -1.5, 0.0, 1.5, 3.0)


def gram_schmidt(axes: np.ndarray, order: list[int]) -> np.ndarray:
    """axes (K, D) unit rows -> rows orthonormalised in `order` (earlier rows win)."""
    out = axes.astype(np.float64).copy()
    done: list[np.ndarray] = []
    for i in order:
        v = out[i] - sum((out[i] @ u) * u for u in done)
        out[i] = v / np.linalg.norm(v)
        done.append(out[i])
    return out.astype(np.float32)


def fit_axes(z: np.ndarray, y: np.ndarray, model: str, split: float) -> tuple[np.ndarray, list[dict]]:
    """z (N, D), y (N, A) -> unit axes (A, D) and validation figures per attribute."""
    n_train = int(len(z) * split)
    axes, figures = [], []
    for a in range(y.shape[1]):
        if model == "linear":
            reg = LinearRegression().fit(z[:n_train], y[:n_train, a])
            coef = reg.coef_
            fig = {"validation_r2": float(reg.score(z[n_train:], y[n_train:, a]))}
        elif model == "logistic":
            labels = y[:, a] > 0.5
            reg = LogisticRegression(max_iter=2000).fit(z[:n_train], labels[:n_train])
            coef = reg.coef_[0]
            fig = {"validation_accuracy": float(reg.score(z[n_train:], labels[n_train:]))}
        else:
            raise ValueError(f"tlgan_model must be 'linear' or 'logistic', got {model!r}")
        axes.append(coef / np.linalg.norm(coef))
        figures.append(fig)
    return np.stack(axes).astype(np.float32), figures


def train(cfg: PackConfig, work: Path) -> dict:
    g, o = gan.load_generator(cfg, work), oracle.load(cfg, work)
    attrs = list(source.attributes(cfg))
    z = latents(cfg.seed + _LATENT_SEED, cfg.tlgan_samples, cfg.latent_dim)
    y = score_latents(g, o, z)
    axes, fits = fit_axes(z, y, cfg.tlgan_model, cfg.svm_train_split)
    order = [attrs.index(a) for a in cfg.tlgan_order] if cfg.tlgan_order else list(range(len(attrs)))
    orthogonal = gram_schmidt(axes, order)
    # oracle probability along each (raw) axis, mean over 200 held-out latents
    z_eval = latents(cfg.seed + _LATENT_SEED + 1, 200, cfg.latent_dim)
    along = {a: [round(float(score_latents(g, o, (z_eval + s * axes[i]).astype(np.float32))[:, i].mean()), 4)
                 for s in SWEEP] for i, a in enumerate(attrs)}
    spread = float(np.subtract(*np.percentile(z_eval @ axes.T, [95, 5], axis=0)).mean())
    records = [direction_sets.record(
        id=f"tlgan/{a}", attribute=a, method="tlgan",
        strength_min=-round(spread, 3), strength_max=round(spread, 3), strength_limit=cfg.strength_limit,
        metrics={k: round(v, 4) for k, v in fits[i].items()},
        provenance={"method": f"TL-GAN {cfg.tlgan_model} regression", "samples": cfg.tlgan_samples,
                    "train_split": cfg.svm_train_split, "scorer": source.source(cfg).scorer,
                    "locking": "pass the attributes to lock as `keep` (Gram-Schmidt at request time)"})
        for i, a in enumerate(attrs)]
    direction_sets.save(work, "tlgan", records, axes)
    figures = {"samples": cfg.tlgan_samples, "model": cfg.tlgan_model,
               "validation": {a: fits[i] for i, a in enumerate(attrs)},
               "cosine_before": [[round(float(v), 3) for v in row] for row in axes @ axes.T],
               "cosine_after_gram_schmidt": [[round(float(v), 3) for v in row] for row in orthogonal @ orthogonal.T],
               "gram_schmidt_order": [attrs[i] for i in order],
               "probability_along_axis": {"strengths": list(SWEEP), **along}}
    checkpoints.record(work, "tlgan", figures)
    for i, a in enumerate(attrs):
        print(f"[tlgan] {a:12s} {fits[i]} probability along axis {along[a]}")
    return figures
