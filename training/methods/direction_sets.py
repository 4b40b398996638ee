"""Directions found by each method, kept in the work folder until export.

Every direction-finding step saves its result with `save(work, method, records,
vectors)`: <work>/directions/<method>.json (one record per direction, the fields
of model_store/README.md minus `row`) and <method>.npy ((K, latent_dim) float32,
unit rows, in record order). Export gathers every saved method with `collect`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from facedit_core.records import OFFSET_MEANING  # noqa: F401 (the methods' records say this)

REQUIRED = ("id", "attribute", "method", "strength_min", "strength_max", "strength_limit",
            "strength_meaning", "metrics", "provenance")


def save(work: Path, method: str, records: list[dict], vectors: np.ndarray) -> None:
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(records) != len(vectors):
        raise ValueError(f"{method}: {len(records)} records but {len(vectors)} vectors")
    for r in records:
        missing = [k for k in REQUIRED if k not in r]
        if missing or r["method"] != method:
            raise ValueError(f"{method}: record {r.get('id')} lacks {missing} or names another method")
    norms = np.linalg.norm(vectors, axis=1)
    if len(vectors) and not np.allclose(norms, 1, atol=1e-4):
        raise ValueError(f"{method}: direction vectors must be unit length, got norms {norms.round(4)}")
    folder = work / "directions"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{method}.npy", vectors)
    tmp = folder / f"{method}.json.tmp"
    tmp.write_text(json.dumps(records, indent=2))
    os.replace(tmp, folder / f"{method}.json")


def collect(work: Path) -> tuple[list[dict], np.ndarray]:
    """Every saved method's records (with `row` set) and the stacked (K, D) vectors."""
    records, vectors = [], []
    for path in sorted((work / "directions").glob("*.json")):
        vecs = np.load(path.with_suffix(".npy"), allow_pickle=False)
        for r, v in zip(json.loads(path.read_text()), vecs):
            records.append({**r, "row": len(vectors)})
            vectors.append(v)
    if not records:
        raise FileNotFoundError(f"no directions in {work / 'directions'}: run a direction step first")
    return records, np.stack(vectors).astype(np.float32)
