"""The `oracle` step: the attribute classifier (a CNN), exported as the pack's classifier.onnx,
that scores every generated face the methods and the evaluation look at.

- attributes.source "renderer": trained on rendered faces against the renderer's attribute
  values in [0, 1] (binary cross-entropy with soft targets), so its probability estimates the
  attribute's value and "present" means probability > 0.5, as in the renderer; accuracy and MAE
  on held-out rendered faces.
- attributes.source "annotators": trained on the annotated generated faces (85/15 split)
  against the annotators' probabilities (training/labels/annotate.py); agreement and
  correlation with the annotators on the held-out 15 %.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training import checkpoints
from training.config import PackConfig
from training.data.datasets import held_out, rendered_batch
from training.generators import gan
from training.labels import annotate, source
from training.models import Oracle, generate, images_to_pixels, pixels_to_images
from training.progress import Progress

CHECKPOINT = "oracle.pt"
_STREAM = 2


def attributes(cfg: PackConfig) -> tuple[str, ...]:
    """The pack's attributes, in the order of the oracle's outputs (training/labels/source.py)."""
    return source.attributes(cfg)


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
    if source.has_ground_truth(cfg):
        o, seconds = fit(cfg, lambda: build(cfg), lambda faces: faces.attributes, _STREAM, cfg.oracle_steps,
                         cfg.oracle_batch, cfg.oracle_lr, "oracle")
        checkpoints.save(work / CHECKPOINT, {"oracle": o.state_dict()})
        figures = {"steps": cfg.oracle_steps, "seconds": round(seconds, 1), **evaluate(cfg, o)}
    else:
        figures = _train_on_annotations(cfg, work)
    checkpoints.record(work, "oracle", figures)
    return figures


def evaluate(cfg: PackConfig, o: Oracle) -> dict:
    """Accuracy (prediction > 0.5 vs truth > 0.5) and MAE per attribute on held-out rendered faces."""
    pixels, faces = held_out(cfg.eval_samples, cfg.resolution, cfg.correlated_attributes)
    probs = predict(o, pixels)
    truth = faces.attributes
    acc = ((probs > 0.5) == (truth > 0.5)).mean(0)
    mae = np.abs(probs - truth).mean(0)
    attrs = attributes(cfg)
    return {"held_out_samples": len(pixels),
            "accuracy": {a: round(float(v), 4) for a, v in zip(attrs, acc)},
            "mae": {a: round(float(v), 4) for a, v in zip(attrs, mae)}}


def _train_on_annotations(cfg: PackConfig, work: Path) -> dict:
    """CNN on the annotated generated faces (85/15 split), soft targets = the annotators' probabilities."""
    torch.manual_seed(cfg.seed + _STREAM)
    gen = torch.Generator().manual_seed(cfg.seed + _STREAM)
    g, ann, stats = gan.load_generator(cfg, work), annotate.load_annotations(work), annotate.stats(work)
    found = ann["found"].astype(bool)
    pixels = generate(g, ann["z"][found])
    targets = annotate.probabilities(ann["values"][found], stats).astype(np.float32)
    n_train = int(0.85 * len(pixels))
    x_train, y_train = torch.from_numpy(pixels[:n_train]), torch.from_numpy(targets[:n_train])
    attrs = attributes(cfg)
    o = build(cfg)
    opt = torch.optim.Adam(o.parameters(), lr=cfg.oracle_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.oracle_steps))
    progress = Progress("oracle", cfg.oracle_steps, every=100)
    o.train()
    for step in range(cfg.oracle_steps):
        idx = torch.randint(0, n_train, (cfg.oracle_batch,), generator=gen)
        x = pixels_to_images(x_train[idx])
        x = x + 0.03 * torch.randn(x.shape, generator=gen)  # GAN faces differ in noise; never flip (yaw, roll)
        loss = F.binary_cross_entropy_with_logits(o(x), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step(), sched.step()
        progress.update(step, bce=loss.item())
    o.eval()
    checkpoints.save(work / CHECKPOINT, {"oracle": o.state_dict(), "resolution": cfg.resolution,
                                         "width": cfg.oracle_width, "attributes": list(attrs)})
    pred = predict(o, pixels[n_train:])
    truth = targets[n_train:]
    figures = {"steps": cfg.oracle_steps, "seconds": round(progress.seconds(), 1), "held_out_samples": len(truth),
               "accuracy": {a: round(float(((pred[:, i] > 0.5) == (truth[:, i] > 0.5)).mean()), 4)
                            for i, a in enumerate(attrs)},
               "correlation": {a: round(float(np.corrcoef(pred[:, i], truth[:, i])[0, 1]), 4)
                               for i, a in enumerate(attrs)}}
    print(f"[oracle] held-out agreement with the annotators {figures['accuracy']}", flush=True)
    return figures
