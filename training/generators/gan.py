"""The pack's generator: the `gan` step trains a DCGAN on rendered faces (non-saturating loss,
Adam) when cfg.generator is "trained"; "digiface64" is the frozen DigiFace DCGAN of a wheel
(training/third_party/wheels.py), which has no `gan` step. `load_generator` gives either."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from training import checkpoints
from training.config import PackConfig
from training.data.datasets import rendered_batch
from training.models import Discriminator, Generator, pixels_to_images
from training.progress import Progress
from training.third_party.wheels import digiface_generator

CHECKPOINT = "gan.pt"
# cfg.generator -> what the manifest's "source" says about it
SOURCES = {
    "trained": {"generator": "DCGAN trained by this project on training/data/renderer.py faces",
                "licence": "same as this repository"},
    "digiface64": {"generator": "pre-trained DCGAN of the gan-face-generate wheel (DigiFace-1M), frozen",
                   "licence": "generator weights MIT (gan-face-generate); DigiFace-1M terms: non-commercial research; "
                              "encoder, classifier and directions: this repository"},
}


def build_generator(cfg: PackConfig) -> Generator:
    return Generator(cfg.latent_dim, cfg.resolution, cfg.g_width)


def load_generator(cfg: PackConfig, work: Path) -> Generator:
    """The pack's generator in eval mode, frozen: trained here (batch norm uses recalibrated
    statistics) or imported from a wheel (cfg.generator, see training/third_party/wheels.py)."""
    if cfg.generator == "digiface64":
        return digiface_generator()
    if cfg.generator not in SOURCES:
        raise ValueError(f"unknown generator {cfg.generator!r}: use one of {sorted(SOURCES)}")
    g = build_generator(cfg)
    g.load_state_dict(checkpoints.load(work / CHECKPOINT)["generator"])
    return g.eval().requires_grad_(False)


@torch.no_grad()
def recalibrate_batchnorm(g: Generator, cfg: PackConfig, batches: int = 100) -> None:
    """Re-estimate batch-norm running statistics as an average over many batches,
    so that the eval-mode generator (what is exported and served) draws the same
    faces as in training."""
    bns = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average
    g.train()
    gen = torch.Generator().manual_seed(cfg.seed + 7)
    for _ in range(batches):
        g(torch.randn(256, cfg.latent_dim, generator=gen))
    for bn in bns:
        bn.momentum = 0.1
    g.eval()


def train(cfg: PackConfig, work: Path) -> dict:
    if cfg.generator != "trained":
        print(f"[gan] generator {cfg.generator!r} is pre-trained and imported: nothing to train", flush=True)
        return {}
    torch.manual_seed(cfg.seed)
    g, d = build_generator(cfg), Discriminator(cfg.resolution, cfg.d_width)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.gan_lr, betas=(cfg.gan_beta1, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.gan_lr, betas=(cfg.gan_beta1, 0.999))
    start, seconds_before = 0, 0.0
    path = work / CHECKPOINT
    if path.exists():  # resume
        state = checkpoints.load(path)
        g.load_state_dict(state["generator"]), d.load_state_dict(state["discriminator"])
        opt_g.load_state_dict(state["opt_g"]), opt_d.load_state_dict(state["opt_d"])
        start, seconds_before = state["step"], state["seconds"]
        torch.set_rng_state(state["rng"])
    progress = Progress("gan", cfg.gan_steps, every=100, start=start)

    def save(step: int) -> None:
        checkpoints.save(path, {"generator": g.state_dict(), "discriminator": d.state_dict(),
                                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "step": step,
                                "seconds": seconds_before + progress.seconds(), "rng": torch.get_rng_state()})

    g.train(), d.train()
    for step in range(start, cfg.gan_steps):
        pixels, _, _ = rendered_batch(cfg.seed, step, cfg.gan_batch, cfg.resolution, cfg.correlated_attributes)
        real = pixels_to_images(pixels)
        z = torch.randn(cfg.gan_batch, cfg.latent_dim)
        fake = g(z)
        loss_d = F.softplus(-d(real)).mean() + F.softplus(d(fake.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-d(fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        progress.update(step, loss_d=loss_d.item(), loss_g=loss_g.item())
        if (step + 1) % 500 == 0:
            save(step + 1)
    recalibrate_batchnorm(g, cfg)
    save(cfg.gan_steps)
    figures = {"steps": cfg.gan_steps, "batch": cfg.gan_batch, "seconds": round(seconds_before + progress.seconds(), 1)}
    checkpoints.record(work, "gan", figures)
    return figures
