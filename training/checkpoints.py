"""Checkpoints of the training steps in a work folder (runs/<pack>/ by default).

Saved atomically (write to a temp file, then rename) so that a run cut off
mid-save never leaves a broken checkpoint behind. Loaded with
weights_only=True: only tensors and plain Python values.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(path: Path) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the training step that writes it first "
                                f"(python -m training --help lists the steps)")
    return torch.load(path, map_location="cpu", weights_only=True)


def record(work: Path, step: str, figures: dict) -> None:
    """Merge `figures` under `step` into work/report.json (timings, metrics)."""
    path = work / "report.json"
    report = json.loads(path.read_text()) if path.exists() else {}
    report[step] = figures
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_report(work: Path) -> dict:
    path = work / "report.json"
    return json.loads(path.read_text()) if path.exists() else {}
