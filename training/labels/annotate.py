"""The `annotate` step of packs whose attributes are measured (attributes.source "annotators"):
generated faces have no ground truth, so `samples` of them are detected (MTCNN) and measured
(training/data/annotators.py); the oracle then learns the measurements (training/labels/oracle.py)
so that directions can be found on many latents.

A measured attribute value v becomes a probability p = sigmoid(2 (v - median) / IQR) over the
annotated faces: "present" (p > 0.5) means above the median face, the quartiles sit at p = 0.27 /
0.73. The detected landmarks' mean is the pack's alignment template (faces cut out of photos).

Writes <work>/annotations.npz (resumable every 500 faces) and report.json "annotate".
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from facedit_faces.detect import FaceDetector
from training import checkpoints
from training.config import PackConfig
from training.data import annotators
from training.data.datasets import latents
from training.generators import gan
from training.labels import source
from training.models import generate
from training.progress import Progress
from training.third_party.wheels import DEFAULT_DIR

ANNOTATIONS = "annotations.npz"
ATTRIBUTES = annotators.ATTRIBUTES
_SEED = 11  # latents of the annotated faces
DETECTOR = "MTCNN (facenet-pytorch 2.6.0 weights), faces upsampled to 256 px, score >= 0.9"


def probabilities(values: np.ndarray, stats: dict) -> np.ndarray:
    """Measured values (N, A) -> probabilities (N, A) (see the module docstring)."""
    med = np.array([stats[a]["median"] for a in ATTRIBUTES], np.float32)
    iqr = np.array([stats[a]["iqr"] for a in ATTRIBUTES], np.float32)
    return 1.0 / (1.0 + np.exp(-2.0 * (values - med) / np.maximum(iqr, 1e-6)))


def load_annotations(work: Path) -> dict:
    path = work / ANNOTATIONS
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m training annotate --config <pack config>` "
                                "first (a work folder restored from a pack holds no annotations)")
    return dict(np.load(path))


def stats(work: Path) -> dict:
    """The annotated faces' statistics per attribute (median, IQR, ...) from report.json."""
    report = checkpoints.read_report(work)
    if "annotate" not in report:
        raise FileNotFoundError(f"{work / 'report.json'} has no annotation figures: run "
                                "`python -m training annotate --config <pack config>` (or restore the pack) first")
    return report["annotate"]["stats"]


def template(work: Path) -> list[list[float]]:
    """The alignment template: the mean MTCNN landmarks (5, 2) of the annotated faces (report.json)."""
    report = checkpoints.read_report(work)
    if "annotate" not in report:
        raise FileNotFoundError(f"{work / 'report.json'} has no annotation figures: run "
                                "`python -m training annotate --config <pack config>` (or restore the pack) first")
    return report["annotate"]["template"]


def _save_npz(path: Path, **arrays) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def annotate(cfg: PackConfig, work: Path) -> dict:
    """Detect and measure `attributes.samples` generated faces; resumable every 500 faces."""
    if source.has_ground_truth(cfg):
        print(f"[annotate] the attributes of {cfg.pack} come from the renderer's ground truth: nothing to annotate",
              flush=True)
        return {}
    g, det = gan.load_generator(cfg, work), FaceDetector(threads=cfg.threads, folder=DEFAULT_DIR)
    n = int(cfg.attributes["samples"])
    path = work / ANNOTATIONS
    z = latents(cfg.seed + _SEED, n, cfg.latent_dim)
    state = {"found": np.zeros(n, bool), "landmarks": np.full((n, 5, 2), np.nan, np.float32),
             "values": np.full((n, len(ATTRIBUTES)), np.nan, np.float32), "done": np.array(0), "seconds": np.array(0.0)}
    if path.exists():
        old = dict(np.load(path))
        if len(old["found"]) == n:
            state = old
    start = int(state["done"])
    progress = Progress("annotate", n, every=500, start=start)
    t0 = time.perf_counter()
    for i in range(start, n, 100):
        j = min(n, i + 100)
        f, lm, v = annotators.detect_and_measure(det, generate(g, z[i:j]))
        state["found"][i:j], state["landmarks"][i:j], state["values"][i:j] = f, lm, v
        progress.update(j - 1, found=float(state["found"][:j].mean()))
        if j % 500 == 0 or j == n:
            state["done"], state["seconds"] = np.array(j), np.array(float(state["seconds"]) + time.perf_counter() - t0)
            t0 = time.perf_counter()
            _save_npz(path, z=z, **{k: state[k] for k in ("found", "landmarks", "values", "done", "seconds")})
    found, values = state["found"], state["values"][state["found"]]
    if found.sum() < 4:
        raise RuntimeError(f"[annotate] MTCNN found {int(found.sum())} of {n} generated faces: too few to measure; "
                           "check the generator (cfg.generator) or raise attributes.samples")
    q1, med, q3 = np.percentile(values, [25, 50, 75], axis=0)
    figures_stats = {a: {"median": float(med[i]), "iqr": float(q3[i] - q1[i]),
                         "p05": float(np.percentile(values[:, i], 5)),
                         "p95": float(np.percentile(values[:, i], 95))} for i, a in enumerate(ATTRIBUTES)}
    template = state["landmarks"][found].mean(0)
    figures = {"samples": n, "found": int(found.sum()), "found_share": round(float(found.mean()), 4),
               "seconds": round(float(state["seconds"]), 1), "stats": figures_stats,
               "template": [[round(float(x), 3), round(float(y), 3)] for x, y in template],
               "landmark_std": [[round(float(x), 3), round(float(y), 3)] for x, y in
                                state["landmarks"][found].std(0)],
               "correlation": [[round(float(c), 3) for c in row] for row in np.corrcoef(values.T)],
               "detector": DETECTOR}
    checkpoints.record(work, "annotate", figures)
    print(f"[annotate] {figures['found']}/{n} faces found; template {figures['template']}", flush=True)
    return figures
