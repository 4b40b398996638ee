"""The identity regressor of the ground-truth evaluation (the other identity measure, FaceNet's
distance, is training/encoders/facenet.py: FaceNet, distance).

- Identity regressor: a CNN (the oracle's architecture, training/models.py Oracle) from an
  image to the renderer's 15 identity parameters in [0, 1] (training/data/renderer.py
  IDENTITY_PARAMS), trained on rendered faces (data stream 4) with the oracle's
  augmentation so that it also reads the generator's softer faces. Its checkpoint is
  <work>/identity.pt; the evaluation trains it when that file is missing. Distance of two
  faces: L2 over the 15 predicted parameters.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training import checkpoints
from training.config import PackConfig
from training.data import renderer
from training.encoders.facenet import distance
from training.labels import oracle
from training.models import Oracle, pixels_to_images

CHECKPOINT = "identity.pt"
_STREAM = 4  # data stream of the regressor's training faces (gan 0, encoder 1, oracle 2, crg 3)


def build(cfg: PackConfig) -> Oracle:
    return Oracle(len(renderer.IDENTITY_PARAMS), cfg.resolution, cfg.identity_width)


def train_or_load(cfg: PackConfig, work: Path) -> Oracle:
    """The regressor of <work>/identity.pt, trained first (identity_steps) when it is missing."""
    path = work / CHECKPOINT
    if path.exists():
        model = build(cfg)
        model.load_state_dict(checkpoints.load(path)["identity"])
        return model.eval().requires_grad_(False)
    model, seconds = oracle.fit(cfg, lambda: build(cfg), lambda faces: faces.identity, _STREAM,
                                cfg.identity_steps, cfg.identity_batch, cfg.identity_lr, "identity")
    checkpoints.save(path, {"identity": model.state_dict(), "seconds": seconds})
    return model.requires_grad_(False)


@torch.no_grad()
def predict(model: Oracle, pixels: np.ndarray, batch: int = 512) -> np.ndarray:
    """pixels (N, R, R, 3) uint8 -> identity parameters (N, 15) in [0, 1]."""
    out = [torch.sigmoid(model(pixels_to_images(torch.from_numpy(pixels[i:i + batch]))))
           for i in range(0, len(pixels), batch)]
    return torch.cat(out).numpy() if out else np.zeros((0, len(renderer.IDENTITY_PARAMS)), np.float32)


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """The regressor's own accuracy against the truth (N, 15), next to predicting the mean.

    The mean predictor answers the truth's own mean for every face (the best constant, so a
    conservative baseline). mae: mean absolute error over all parameters; l2: mean L2 over
    the 15 parameters per face; r2 per parameter (1 - SSE / SSE of the mean predictor).
    """
    mean = np.broadcast_to(truth.mean(0), truth.shape)
    r2 = 1 - ((predicted - truth) ** 2).sum(0) / np.maximum(((mean - truth) ** 2).sum(0), 1e-12)
    return {"samples": len(truth), "mae": round(float(np.abs(predicted - truth).mean()), 4),
            "mean_predictor_mae": round(float(np.abs(mean - truth).mean()), 4),
            "l2": round(float(distance(predicted, truth).mean()), 4),
            "mean_predictor_l2": round(float(distance(mean, truth).mean()), 4),
            "r2": {p: round(float(v), 3) for p, v in zip(renderer.IDENTITY_PARAMS, r2)}}
