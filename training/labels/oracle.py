"""Step 3: the attribute oracle, a CNN trained on rendered ground truth.

Targets are the renderer's attribute values in [0, 1] (binary cross-entropy
with soft targets), so the oracle's probability estimates the attribute's
value and "present" means probability > 0.5, as in the renderer.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training import checkpoints
from training.config import PackConfig
from training.data import annotators, renderer
from training.data.datasets import held_out, rendered_batch
from training.models import Oracle, images_to_pixels, pixels_to_images
from training.progress import Progress

CHECKPOINT = "oracle.pt"
_STREAM = 2


def attributes(cfg: PackConfig) -> tuple[str, ...]:
    """The pack's attributes, in the order of the oracle's outputs (cfg.labels says where they come from)."""
    if cfg.labels == "renderer":
        return tuple(renderer.ATTRIBUTES)
    if cfg.labels == "annotators":
        return tuple(annotators.ATTRIBUTES)
    raise ValueError(f"unknown labels {cfg.labels!r}: use 'renderer' or 'annotators'")


def build(cfg: PackConfig) -> Oracle:
    return Oracle(len(attributes(cfg)), cfg.resolution, cfg.oracle_width)


def load(cfg: PackConfig, work: Path) -> Oracle:
    o = build(cfg)
    o.load_state_dict(checkpoints.load(work / CHECKPOINT)["oracle"])
    return o.eval().requires_grad_(False)


@torch.no_grad()
def predict(oracle: Oracle, pixels: np.ndarray, batch: int = 512) -> np.ndarray:
    """pixels (N, R, R, 3) uint8 -> probabilities (N, A) float32."""
    out = [torch.sigmoid(oracle(pixels_to_images(torch.from_numpy(pixels[i:i + batch]))))
           for i in range(0, len(pixels), batch)]
    return torch.cat(out).numpy()


@torch.no_grad()
def score_latents(g, o, z: np.ndarray, batch: int = 500) -> np.ndarray:
    """z (N, D) -> oracle probabilities (N, A) of the generated faces."""
    scores = []
    for i in range(0, len(z), batch):
        pixels = images_to_pixels(g(torch.from_numpy(z[i:i + batch]))).numpy()
        scores.append(predict(o, pixels))
    return np.concatenate(scores)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild noise and blur so that the oracle also reads a GAN's softer faces."""
    x = x + 0.04 * torch.randn(x.shape, generator=gen)
    blur = torch.rand(x.shape[0], 1, 1, 1, generator=gen) < 0.5
    smooth = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return torch.where(blur, 0.5 * x + 0.5 * smooth, x)


def fit(cfg: PackConfig, build_model, target, stream: int, steps: int, batch: int, lr: float,
        name: str) -> tuple[torch.nn.Module, float]:
    """Build (after seeding) and train a model (images -> logits (N, K)) on rendered faces
    against soft targets in [0, 1].

    target: Faces -> (N, K) float32 array (e.g. the attributes, or the identity parameters).
    Batches come from data stream `stream`; binary cross-entropy, Adam with cosine decay,
    the noise/blur augmentation above. Returns the model in eval mode and the seconds it took.
    """
    torch.manual_seed(cfg.seed + stream)
    gen = torch.Generator().manual_seed(cfg.seed + stream)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    progress = Progress(name, steps, every=100)
    model.train()
    for step in range(steps):
        pixels, _, faces = rendered_batch(cfg.seed + stream, step, batch, cfg.resolution, cfg.correlated_attributes)
        loss = F.binary_cross_entropy_with_logits(model(_augment(pixels_to_images(pixels), gen)),
                                                  torch.from_numpy(target(faces)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step(), sched.step()
        progress.update(step, bce=loss.item())
    return model.eval(), progress.seconds()


def train(cfg: PackConfig, work: Path) -> dict:
    o, seconds = fit(cfg, lambda: build(cfg), lambda faces: faces.attributes, _STREAM, cfg.oracle_steps,
                     cfg.oracle_batch, cfg.oracle_lr, "oracle")
    checkpoints.save(work / CHECKPOINT, {"oracle": o.state_dict()})
    figures = {"steps": cfg.oracle_steps, "seconds": round(seconds, 1), **evaluate(cfg, o)}
    checkpoints.record(work, "oracle", figures)
    return figures


def evaluate(cfg: PackConfig, o: Oracle) -> dict:
    """Accuracy (prediction > 0.5 vs truth > 0.5) and MAE per attribute on held-out faces."""
    pixels, faces = held_out(cfg.eval_samples, cfg.resolution, cfg.correlated_attributes)
    probs = predict(o, pixels)
    truth = faces.attributes
    acc = ((probs > 0.5) == (truth > 0.5)).mean(0)
    mae = np.abs(probs - truth).mean(0)
    return {"held_out_samples": len(pixels),
            "accuracy": {a: round(float(v), 4) for a, v in zip(renderer.ATTRIBUTES, acc)},
            "mae": {a: round(float(v), 4) for a, v in zip(renderer.ATTRIBUTES, mae)}}
