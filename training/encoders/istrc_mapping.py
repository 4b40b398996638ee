"""ISTRC's mapping M: FaceNet embeddings -> latents of the pack's generator (training/methods/istrc.py
says how the circle face -> FaceNet -> edit -> M -> generator works).

Paper section 5.2: five fully connected layers with BatchNorm and tanh. Here `istrc_layers`
Linear layers, each hidden one followed by BatchNorm1d and tanh, and a plain Linear output: the
latent is z ~ N(0, I), and a tanh would cap every coordinate at +-1 although a third of a
standard normal's mass lies beyond it. Trained on (FaceNet(G(z)), z) pairs with MSE(M(e), z)
(the paper's loss), optionally plus `istrc_image_weight` x MAE(G(M(e)), G(z)) through the frozen
generator.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.config import PackConfig
from training.progress import Progress
from training.third_party.facenet_port import EMBEDDING


class Mapping(nn.Module):
    """e (N, 512) -> z (N, latent_dim): `layers` Linear layers, BatchNorm1d + tanh after each
    hidden one, linear output (z is N(0, I), unbounded)."""

    def __init__(self, latent_dim: int, hidden: int, layers: int, embedding: int = EMBEDDING):
        super().__init__()
        if layers < 1:
            raise ValueError("istrc_layers must be >= 1")
        blocks: list[nn.Module] = []
        width = embedding
        for _ in range(layers - 1):
            blocks += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.Tanh()]
            width = hidden
        blocks.append(nn.Linear(width, latent_dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.net(embedding)


def build(cfg: PackConfig) -> Mapping:
    return Mapping(cfg.latent_dim, cfg.istrc_hidden, cfg.istrc_layers)


def train_mapping(cfg: PackConfig, g, z: np.ndarray, e: np.ndarray, seed: int) -> tuple[Mapping, float]:
    """Fit M on (e, z) pairs (torch seeded with `seed`); returns (M in eval mode, seconds)."""
    torch.manual_seed(seed)
    m = build(cfg)
    opt = torch.optim.Adam(m.parameters(), lr=cfg.istrc_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.istrc_steps))
    zt, et = torch.from_numpy(z), torch.from_numpy(e)
    gen = torch.Generator().manual_seed(cfg.seed)
    progress = Progress("istrc mapping", cfg.istrc_steps, every=max(1, cfg.istrc_steps // 10))
    m.train()
    for step in range(cfg.istrc_steps):
        idx = torch.randint(0, len(zt), (min(cfg.istrc_batch, len(zt)),), generator=gen)
        z_hat = m(et[idx])
        loss = F.mse_loss(z_hat, zt[idx])
        values = {"latent_mse": loss.item()}
        if cfg.istrc_image_weight > 0:  # through the frozen generator, on the first istrc_image_batch rows
            k = min(cfg.istrc_image_batch, len(idx))
            with torch.no_grad():
                target = g(zt[idx[:k]])
            image = F.l1_loss(g(z_hat[:k]), target)
            loss = loss + cfg.istrc_image_weight * image
            values["image_mae"] = image.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step(), sched.step()
        progress.update(step, **values)
    return m.eval(), progress.seconds()
