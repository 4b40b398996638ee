"""Step 2: the CRG encoder, trained against the frozen generator.

Each step makes the two updates of the Cyclic Reverse Generator paper:
  (1) latent cycle on generated images: z -> G -> E -> z',  loss MSE(z, z')
  (2) image cycle on rendered images:   x -> E -> G -> x',  loss MAE(x, x')
      (packs without a renderer or dataset, cfg.image_cycle_data == "generator": generated faces
      under random flips, shifts, scale, rotation and colour jitter, see training/data/augment.py)
The generator is frozen (eval mode, no parameter updates); gradients of (2)
flow through it into the encoder only.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from training import checkpoints
from training.config import PackConfig
from training.data import augment
from training.data.datasets import rendered_batch
from training.generators import gan
from training.models import Encoder, pixels_to_images
from training.progress import Progress

CHECKPOINT = "encoder.pt"
_STREAM = 1  # data stream id, distinct from the GAN's


def build(cfg: PackConfig) -> Encoder:
    return Encoder(cfg.latent_dim, cfg.resolution, cfg.encoder_width)


def load(cfg: PackConfig, work: Path) -> Encoder:
    e = build(cfg)
    e.load_state_dict(checkpoints.load(work / CHECKPOINT)["encoder"])
    return e.eval().requires_grad_(False)


def image_cycle_batch(cfg: PackConfig, step: int, g, rng: torch.Generator) -> torch.Tensor:
    """Faces x (N, 3, R, R) in [-1, 1] for the image cycle of `step` (see the module docstring)."""
    if cfg.image_cycle_data == "renderer":
        pixels, _, _ = rendered_batch(cfg.seed + _STREAM, step, cfg.encoder_batch, cfg.resolution,
                                      cfg.correlated_attributes)
        return pixels_to_images(pixels)
    if cfg.image_cycle_data == "generator":
        with torch.no_grad():
            return augment.jitter(g(torch.randn(cfg.encoder_batch, cfg.latent_dim, generator=rng)), rng)
    raise ValueError(f"unknown image_cycle_data {cfg.image_cycle_data!r}: use 'renderer' or 'generator'")


def train(cfg: PackConfig, work: Path) -> dict:
    torch.manual_seed(cfg.seed + 1)
    g = gan.load_generator(cfg, work)
    e = build(cfg)
    opt = torch.optim.Adam(e.parameters(), lr=cfg.encoder_lr, betas=(0.9, 0.999))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, 2 * cfg.encoder_steps))
    start, seconds_before = 0, 0.0
    path = work / CHECKPOINT
    if path.exists():
        state = checkpoints.load(path)
        e.load_state_dict(state["encoder"])
        if "opt" in state:  # not in a checkpoint restored from a pack (python -m training restore)
            opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        start, seconds_before = state["step"], state["seconds"]
    progress = Progress("encoder", cfg.encoder_steps, every=100, start=start)

    def save(step: int) -> None:
        checkpoints.save(path, {"encoder": e.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                "step": step, "seconds": seconds_before + progress.seconds()})

    e.train()
    for step in range(start, cfg.encoder_steps):
        # (1) latent cycle on generated images
        z = torch.randn(cfg.encoder_batch, cfg.latent_dim)
        with torch.no_grad():
            x_gen = g(z)
        loss_latent = F.mse_loss(e(x_gen), z)
        opt.zero_grad(set_to_none=True)
        (cfg.encoder_latent_weight * loss_latent).backward()
        opt.step(), sched.step()
        # (2) image cycle
        x = image_cycle_batch(cfg, step, g, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
        loss_image = F.l1_loss(g(e(x)), x)
        opt.zero_grad(set_to_none=True)
        (cfg.encoder_image_weight * loss_image).backward()
        opt.step(), sched.step()
        progress.update(step, latent_mse=loss_latent.item(), image_mae=loss_image.item())
        if (step + 1) % 500 == 0:
            save(step + 1)
    save(cfg.encoder_steps)
    figures = {"steps": cfg.encoder_steps, "batch": cfg.encoder_batch,
               "seconds": round(seconds_before + progress.seconds(), 1)}
    checkpoints.record(work, "encoder", figures)
    return figures
