"""The `sefa` step: SeFa (Shen & Zhou, "Closed-Form Factorization of Latent Semantics in GANs"):
unsupervised directions from the generator's first layer.

The first layer maps z (D,) linearly to its output: y = A z with A = the
ConvTranspose2d weight (D, C, 4, 4) read as a (C*16, D) matrix. The directions that
change y most are the top eigenvectors of A^T A. They are found without labels and
labelled afterwards: each component is applied at +/-`sefa_probe_strength` to held-out
latents and named after the oracle attribute whose probability it moves most (sign
chosen so that + increases it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training import checkpoints
from training.config import PackConfig
from training.data.datasets import latents
from training.generators import gan
from training.labels import oracle, source
from training.labels.oracle import score_latents
from training.methods import direction_sets

_LATENT_SEED = 7
MIN_LABEL_EFFECT = 0.2  # mean probability change that earns a component an attribute alias


def components(g: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """Generator -> eigenvalues (D,) descending and unit eigenvectors (D, D) as rows."""
    first = next(m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d))
    w = first.weight.detach().numpy().astype(np.float64)  # (D, C, 4, 4)
    a = w.reshape(w.shape[0], -1).T  # (C*16, D)
    values, vectors = np.linalg.eigh(a.T @ a)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order].T.astype(np.float32)


def train(cfg: PackConfig, work: Path) -> dict:
    g, o = gan.load_generator(cfg, work), oracle.load(cfg, work)
    attrs = list(source.attributes(cfg))
    values, vectors = components(g)
    k = min(cfg.sefa_components, len(values))
    z = latents(cfg.seed + _LATENT_SEED, 200, cfg.latent_dim)
    base = score_latents(g, o, z)
    s = cfg.sefa_probe_strength
    records, rows, effects = [], [], {}
    best: dict[str, tuple[float, int, float]] = {}
    for c in range(k):
        up = score_latents(g, o, (z + s * vectors[c]).astype(np.float32)) - base
        down = score_latents(g, o, (z - s * vectors[c]).astype(np.float32)) - base
        effect = (up.mean(0) - down.mean(0)) / 2  # signed mean change per attribute at +s
        label = int(np.argmax(np.abs(effect)))
        sign = 1.0 if effect[label] >= 0 else -1.0
        effects[c] = {a: round(float(e), 4) for a, e in zip(attrs, effect)}
        record = direction_sets.record(
            id=f"sefa/component_{c}", attribute=attrs[label], method="sefa",
            strength_min=-s, strength_max=s, strength_limit=cfg.strength_limit,
            metrics={"eigenvalue": float(values[c]), "label_effect": float(abs(effect[label]))},
            provenance={"method": "SeFa eigenvector of A^T A (first generator layer)", "component": c,
                        "labelled_by": f"{source.source(cfg).scorer}: probability change at +/- probe strength",
                        "effects": effects[c]})
        records.append(record)
        rows.append(sign * vectors[c])
        if abs(effect[label]) > best.get(attrs[label], (0.0,))[0]:
            best[attrs[label]] = (abs(effect[label]), c, sign)
    for a, (effect, c, sign) in sorted(best.items()):
        if effect >= MIN_LABEL_EFFECT:
            base = records[c]
            records.append(direction_sets.record(
                **{k: base[k] for k in direction_sets.REQUIRED if k not in ("id", "attribute", "provenance")},
                id=f"sefa/{a}", attribute=a, provenance={**base["provenance"], "alias_of": f"sefa/component_{c}"}))
            rows.append(sign * vectors[c])
    direction_sets.save(work, "sefa", records, np.stack(rows))
    figures = {"components": k, "top_eigenvalues": [round(float(v), 3) for v in values[:k]],
               "effects": effects, "attribute_aliases": {a: f"component_{c}" for a, (e, c, _) in best.items()
                                                         if e >= MIN_LABEL_EFFECT}}
    checkpoints.record(work, "sefa", figures)
    for c in range(k):
        print(f"[sefa] component {c} eigenvalue {values[c]:.2f} -> {records[c]['attribute']} "
              f"({records[c]['metrics']['label_effect']:.2f})")
    return figures
