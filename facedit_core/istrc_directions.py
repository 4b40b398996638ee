"""ISTRC edit directions as registry records, derived from a pack's ISTRC files.

An ISTRC edit of attribute a walks the FaceNet embedding e (unit, 512-d) along the gradient
of a's logistic classifier, logit = w . e + b, whose gradient is the constant w. The walk
(facedit_core.sphere.walk) normalises every step, so only the direction of w matters:
the record's vector is the unit n = w / |w|, and the logit is |w| (n . e) + b with |w| and b
in the record's metrics (`weight_norm`, `bias`).

These vectors live in another space than the latent directions: `space` "facenet", `dim`
512 (the embedding's length), never latent_dim. The directions service refuses them in a
latent Compose; the encoder's IstrcEdit walks along them.

Packs exported before ISTRC directions were registry records (the committed `synth`) have
no `istrc/<attribute>` record in directions.json: `records(pack)` derives them when the pack
is loaded, from istrc.json (attribute order, biases, step, strength range, limit, meaning,
classifier metrics) and istrc_classifiers.npy (A, 512) float32 - nothing is rebuilt.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from facedit_core.records import FACENET_SPACE, ISTRC_PREFIX

if TYPE_CHECKING:  # facedit_core.pack reads these records when it loads a pack
    from facedit_core.pack import Pack

METHOD = "istrc"
FILES = ("istrc", "istrc_classifiers")


def has_files(pack: "Pack") -> bool:
    """True when the pack lists istrc.json and istrc_classifiers.npy."""
    return all(name in pack.manifest["artefacts"] for name in FILES)


def records(pack: "Pack") -> list[tuple[dict, np.ndarray]]:
    """One (record, unit vector (512,) float32) per ISTRC classifier of the pack, in istrc.json's
    attribute order; [] for a pack without ISTRC files. Record keys: those of directions.json
    records (id, attribute, method, strength_min/max/limit, strength_meaning, metrics,
    provenance) plus space "facenet" and dim 512. Metrics: the classifier's numeric figures
    (validation_accuracy, ...), weight_norm = |w| and bias = b (logit = weight_norm n . e +
    bias) and step (radians per step)."""
    if not has_files(pack):
        return []
    meta = json.loads(pack.artefact("istrc").read_text())
    weights = np.load(pack.artefact("istrc_classifiers"), allow_pickle=False).astype(np.float64)
    attributes, biases = list(meta["attributes"]), [float(b) for b in meta["biases"]]
    dim = int(meta["embedding_dim"])
    if weights.shape != (len(attributes), dim) or len(biases) != len(attributes):
        raise ValueError(f"{pack.name}: istrc_classifiers.npy {weights.shape} and {len(biases)} biases do not "
                         f"match istrc.json's {len(attributes)} attributes of dimension {dim}")
    out = []
    for a, w, b in zip(attributes, weights, biases):
        norm = float(np.linalg.norm(w))
        if not np.isfinite(norm) or norm == 0:
            raise ValueError(f"{pack.name}: the ISTRC classifier of {a!r} has weight norm {norm}")
        figures = meta.get("metrics", {}).get(a, {})
        metrics = {k: float(v) for k, v in figures.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "weight_norm"}
        metrics.update(weight_norm=norm, bias=b, step=float(meta["step"]))
        record = {
            "id": ISTRC_PREFIX + a, "attribute": a, "method": METHOD,
            "strength_min": float(meta["strength_min"]), "strength_max": float(meta["strength_max"]),
            "strength_limit": float(meta["strength_limit"]), "strength_meaning": meta["strength_meaning"],
            "metrics": metrics,
            "provenance": {
                "method": "ISTRC: unit weight vector w/|w| of the attribute's classifier on FaceNet embeddings "
                          "(the constant gradient of its logit); an edit walks the unit sphere along it",
                "classifier": meta.get("classifier", ""), "labels": figures.get("labels", ""),
                "upsampling": meta.get("upsampling", ""), "facenet_input": meta.get("facenet_input"),
                "source": f"istrc.json + istrc_classifiers.npy of pack {pack.name} {pack.version}, "
                          f"derived when the pack was loaded",
            },
            "space": FACENET_SPACE, "dim": dim,
        }
        out.append((record, (w / norm).astype(np.float32)))
    return out


def logit(vector: np.ndarray, metrics: dict, e: np.ndarray) -> float:
    """The classifier logit weight_norm (n . e) + bias of a unit direction n at embedding e; a
    direction without a classifier (no weight_norm / bias in its metrics) gives the cosine n . e."""
    return float(metrics.get("weight_norm", 1.0) * float(np.dot(vector, e)) + metrics.get("bias", 0.0))
