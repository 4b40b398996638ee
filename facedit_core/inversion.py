"""Faithful inversion of one aligned face: start from the encoder's latent, then optimise the latent
and a per-face modulation of the generator (pivotal tuning, PTI-style, Roich et al. 2022) against
the face, with a pixel loss and a FaceNet identity loss.

The gradients come from the pack's `inversion` graph (training/third_party/inversion_onnx.py), run
by the caller (the encoder service, with ONNX Runtime); this module is the optimiser: Adam on the
latent z and on the modulation, a prior that keeps |z| near sqrt(D) (where the generator was
trained), and an L2 penalty that keeps the modulation small (so edits of z still act as on the
generator's own faces). The result renders with the pack's `generator_modulated` graph:
input row = [z | modulation].

Shapes: z (D,) float32; modulation (M,) float32; target (R, R, 3) uint8 aligned face;
target_embedding (512,) float32 unit FaceNet embedding of the face (upsampled to 160 px).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from facedit_core.errors import DeadlineExceeded

# step(z (1, D), modulation (1, M), target (1, R, R, 3) uint8, target_embedding (1, 512), identity_weight (1,))
#   -> (loss, pixel_loss, identity, grad_z (1, D), grad_modulation (1, M))
StepFn = Callable[..., tuple]


STEP_INPUTS = ("z", "modulation", "target", "target_embedding", "identity_weight")  # the inversion graph's


def graph_step(session) -> StepFn:
    """The StepFn of the pack's `inversion` graph run by `session` (anything with ONNX Runtime's
    run(output_names, feeds))."""
    def step(*inputs):
        return session.run(None, dict(zip(STEP_INPUTS, inputs)))
    return step


def modulated_rows(z: np.ndarray, modulation: np.ndarray) -> np.ndarray:
    """z (N, D), modulation (N, M) -> (N, D + M) float32 contiguous: the rows `z_modulation` of the pack's
    `generator_modulated` graph."""
    return np.ascontiguousarray(np.concatenate([z, modulation], axis=1), np.float32)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The optimisation's knobs (docs/inversion.md says how they were chosen)."""
    steps: int = 30                     # gradient steps (each one generator + FaceNet pass and back)
    lr_z: float = 0.05                  # Adam step size of the latent
    lr_modulation: float = 0.02         # Adam step size of the modulation
    tune_after: int = 0                 # steps on z alone before the modulation is tuned too
    identity_weight: float = 0.1        # weight of 1 - cos(FaceNet(rendering), FaceNet(face))
    prior_weight: float = 1e-3          # weight of (|z|^2 / D - 1)^2
    modulation_weight: float = 1e-3     # weight of mean(modulation^2)


@dataclasses.dataclass(frozen=True)
class Inversion:
    z: np.ndarray             # (D,) float32
    modulation: np.ndarray    # (M,) float32
    pixel_loss: float         # mean squared error in [-1, 1] at the last step
    identity: float           # FaceNet cosine to the face at the last step
    steps: int
    seconds: float


class _Adam:
    def __init__(self, shape: tuple[int, ...], lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.m, self.v = np.zeros(shape, np.float64), np.zeros(shape, np.float64)
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0

    def step(self, x: np.ndarray, grad: np.ndarray) -> np.ndarray:
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m_hat, v_hat = self.m / (1 - self.b1 ** self.t), self.v / (1 - self.b2 ** self.t)
        return (x - self.lr * m_hat / (np.sqrt(v_hat) + self.eps)).astype(np.float32)


def invert(z0: np.ndarray, modulation_size: int, target: np.ndarray, target_embedding: np.ndarray, step: StepFn,
           settings: Settings = Settings(), deadline: float | None = None) -> Inversion:
    """Optimise from the encoder's z0; `deadline` (time.monotonic()) raises DeadlineExceeded when the
    steps cannot finish before it (checked before each step from the mean step time so far)."""
    start = time.monotonic()
    z = np.asarray(z0, np.float32).reshape(1, -1).copy()
    d = z.shape[1]
    modulation = np.zeros((1, modulation_size), np.float32)
    target = np.ascontiguousarray(target, np.uint8)[None]
    embedding = np.asarray(target_embedding, np.float32).reshape(1, -1)
    weight = np.array([settings.identity_weight], np.float32)
    adam_z, adam_m = _Adam(z.shape, settings.lr_z), _Adam(modulation.shape, settings.lr_modulation)
    pixel = identity = float("nan")
    for i in range(settings.steps):
        if deadline is not None and i > 0:
            per_step = (time.monotonic() - start) / i
            if time.monotonic() + per_step * (settings.steps - i) > deadline:
                raise DeadlineExceeded(f"faithful inversion needs about {per_step * settings.steps:.1f} s for "
                                       f"{settings.steps} steps; give the call a longer deadline or use fidelity fast")
        _, pixel, identity, grad_z, grad_m = step(z, modulation, target, embedding, weight)
        norm2 = float((z * z).sum()) / d
        grad_z = grad_z + settings.prior_weight * 2 * (norm2 - 1) * 2 * z / d
        z = adam_z.step(z, grad_z)
        if i >= settings.tune_after:
            grad_m = grad_m + settings.modulation_weight * 2 * modulation / modulation.size
            modulation = adam_m.step(modulation, grad_m)
    return Inversion(z=z[0], modulation=modulation[0], pixel_loss=float(pixel), identity=float(identity),
                     steps=settings.steps, seconds=time.monotonic() - start)
