"""The `interfacegan` step: InterFaceGAN directions (Shen et al.): one linear SVM per attribute.

Sample latents, score each generated face with the oracle, keep the top and
bottom `svm_share` of the scores as positives and negatives, split 70/30, fit a
linear SVM, and use its unit normal n as the direction (pointing towards the
attribute). Strength s moves a latent by z' = z + s * n, so s is a signed
distance in latent units; since n . z ~ N(0, 1) under the prior, s = 3 takes a
typical face about three standard deviations across the boundary.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.svm import LinearSVC

from training import checkpoints
from training.config import PackConfig
from training.data.datasets import latents
from training.generators import gan
from training.labels import oracle, source
from training.methods import direction_sets

LATENT_SEED = 4  # the scored latents (refine measures its strength range on the same ones)


def fit_direction(z: np.ndarray, score: np.ndarray, cfg: PackConfig, rng: np.random.Generator) -> dict:
    """One attribute: z (N, D), score (N,) -> unit normal (D,) and accuracies."""
    order = np.argsort(score)
    k = max(2, int(len(z) * cfg.svm_share))
    idx = np.concatenate([order[-k:], order[:k]])
    labels = np.concatenate([np.ones(k), np.zeros(k)])
    perm = rng.permutation(len(idx))
    idx, labels = idx[perm], labels[perm]
    n_train = int(len(idx) * cfg.svm_train_split)
    svm = LinearSVC(C=cfg.svm_c, max_iter=20000)
    svm.fit(z[idx[:n_train]], labels[:n_train])
    val_acc = float((svm.predict(z[idx[n_train:]]) == labels[n_train:]).mean())
    # "all samples": every latent, labelled by whether its score is > 0.5
    all_acc = float((svm.predict(z) == (score > 0.5)).mean())
    norm = float(np.linalg.norm(svm.coef_))
    normal = (svm.coef_[0] / norm).astype(np.float32)
    distance = z @ normal + float(svm.intercept_[0]) / norm  # signed distance to the hyperplane
    lo, hi = np.percentile(distance, [5, 95])
    return {"normal": normal, "offset": float(svm.intercept_[0]) / norm,
            "validation_accuracy": val_acc, "all_samples_accuracy": all_acc,
            "train_samples": n_train, "validation_samples": len(idx) - n_train,
            "recommended_strength": float(hi - lo)}


def _record(cfg: PackConfig, attribute: str, fit: dict) -> dict:
    span = round(fit["recommended_strength"], 3)
    return direction_sets.record(
        id=f"interfacegan/{attribute}", attribute=attribute, method="interfacegan",
        strength_min=-span, strength_max=span, strength_limit=cfg.strength_limit,
        metrics={"validation_accuracy": fit["validation_accuracy"], "all_samples_accuracy": fit["all_samples_accuracy"]},
        provenance={"method": "InterFaceGAN linear SVM", "samples": cfg.svm_samples, "share": cfg.svm_share,
                    "train_split": cfg.svm_train_split, "svm_c": cfg.svm_c, "scorer": source.source(cfg).scorer},
        offset=fit["offset"])


def train(cfg: PackConfig, work: Path) -> dict:
    g, o = gan.load_generator(cfg, work), oracle.load(cfg, work)
    attrs = source.attributes(cfg)
    z = latents(cfg.seed + LATENT_SEED, cfg.svm_samples, cfg.latent_dim)
    scores = oracle.score_latents(g, o, z)
    rng = np.random.default_rng(cfg.seed)
    fits = {a: fit_direction(z, scores[:, i], cfg, rng) for i, a in enumerate(attrs)}
    normals = np.stack([fits[a]["normal"] for a in attrs])
    direction_sets.save(work, "interfacegan", [_record(cfg, a, fits[a]) for a in attrs], normals)
    figures = {"samples": cfg.svm_samples, "share": cfg.svm_share,
               "score_mean": {a: round(float(scores[:, i].mean()), 4) for i, a in enumerate(attrs)},
               "boundary_cosine": [[round(float(v), 3) for v in row] for row in normals @ normals.T],
               "attributes": {a: {k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in f.items() if k != "normal"} for a, f in fits.items()}}
    checkpoints.record(work, "interfacegan", figures)
    for a in attrs:
        print(f"[interfacegan] {a:12s} val acc {fits[a]['validation_accuracy']:.3f} "
              f"all {fits[a]['all_samples_accuracy']:.3f}")
    return figures
