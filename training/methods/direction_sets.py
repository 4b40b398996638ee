"""Directions found by each method, kept in the work folder until export.

A direction record is facedit_core.records.DirectionRecord: the one definition of what a
direction is, which the services' registry reads back from directions.json. Every
direction-finding step builds its records with `record(...)` (a checked DirectionRecord as a
JSON object, plus the method's own extra fields such as InterFaceGAN's `offset` or the words
method's `word`) and saves them with `save(work, method, records, vectors)`:
<work>/directions/<method>.json (one record per direction, in order) and <method>.npy
((K, latent_dim) float32, unit rows, in record order). Export gathers every saved method with
`collect`. Both check every record with DirectionRecord.from_dict(...).check().
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from facedit_core.errors import InvalidArgument
from facedit_core.records import OFFSET_MEANING, DirectionRecord

# the fields every record has (DirectionRecord's fields without a default)
REQUIRED = tuple(f.name for f in dataclasses.fields(DirectionRecord) if f.default is dataclasses.MISSING)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DirectionRecord) if f.default is not dataclasses.MISSING}


def record(id: str, attribute: str, method: str, strength_min: float, strength_max: float, strength_limit: float,
           metrics: dict, provenance: dict, strength_meaning: str = OFFSET_MEANING, **extra) -> dict:
    """A checked DirectionRecord as the JSON object of directions.json, `extra` fields after its own.
    Fields left at their defaults (space "latent", dim 0 = the pack's latent_dim) are not written."""
    rec = DirectionRecord(id=id, attribute=attribute, method=method, strength_min=float(strength_min),
                          strength_max=float(strength_max), strength_limit=float(strength_limit),
                          strength_meaning=strength_meaning,
                          metrics={k: v.item() if isinstance(v, np.generic) else v for k, v in metrics.items()},
                          provenance=provenance)
    _check(rec, method)
    data = {k: v for k, v in rec.to_dict().items() if k not in _DEFAULTS or v != _DEFAULTS[k]}
    clash = sorted(set(extra) & set(data))
    if clash:
        raise ValueError(f"{id}: extra fields {clash} are DirectionRecord fields")
    return {**data, **extra}


def _check(rec: DirectionRecord, method: str) -> None:
    try:
        rec.check()
    except InvalidArgument as e:
        raise ValueError(f"{method}: {e}") from None
    if rec.method != method:
        raise ValueError(f"{method}: record {rec.id} names method {rec.method!r}")


def _checked(data: dict, method: str) -> DirectionRecord:
    try:
        rec = DirectionRecord.from_dict(data)
    except InvalidArgument as e:
        raise ValueError(f"{method}: {e}") from None
    _check(rec, method)
    return rec


def save(work: Path, method: str, records: list[dict], vectors: np.ndarray) -> None:
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(records) != len(vectors):
        raise ValueError(f"{method}: {len(records)} records but {len(vectors)} vectors")
    for r in records:
        rec = _checked(r, method)
        if rec.dim and len(vectors) and rec.dim != vectors.shape[1]:
            raise ValueError(f"{method}: record {rec.id} says dim {rec.dim}, the vectors have {vectors.shape[1]}")
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
    """Every saved method's records (checked, with `row` set) and the stacked (K, D) vectors."""
    records, vectors = [], []
    for path in sorted((work / "directions").glob("*.json")):
        vecs = np.load(path.with_suffix(".npy"), allow_pickle=False)
        for r, v in zip(json.loads(path.read_text()), vecs):
            _checked(r, path.stem)
            records.append({**r, "row": len(vectors)})
            vectors.append(v)
    if not records:
        raise FileNotFoundError(f"no directions in {work / 'directions'}: run a direction step first")
    return records, np.stack(vectors).astype(np.float32)
