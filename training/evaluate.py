"""Step 5: measure the pack on held-out rendered faces.

- renderer speed (images/s, one process);
- encoder reconstruction x -> E -> G -> x' on held-out rendered faces: MAE and
  MSE of pixels in [0, 1], and dhash/phash/whash similarity (1 - Hamming/64) as
  in the CRG paper's Table 2; the latent cycle MSE(z, E(G(z)));
- attribute agreement: oracle(x) vs oracle(x') (does the encoding keep the
  attributes an edit starts from);
- edit success: share of generated faces whose oracle label is on the asked
  side after moving by +/- the direction's recommended strength.
"""
from __future__ import annotations

import time
from pathlib import Path

import imagehash
import numpy as np
import torch
from PIL import Image

from training import checkpoints, crg_encoder, gan, interfacegan, oracle, renderer
from training.config import PackConfig
from training.data import held_out, latents
from training.models import images_to_pixels, pixels_to_images

_LATENT_SEED = 5


def renderer_speed(resolution: int, n: int = 2000) -> float:
    faces = renderer.sample_faces(123, n)
    t0 = time.perf_counter()
    renderer.render(faces, size=resolution)
    return n / (time.perf_counter() - t0)


def hash_similarity(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean 1 - Hamming/bits between hashes of two (N, R, R, 3) uint8 stacks."""
    sims = {"dhash": [], "phash": [], "whash": []}
    for x, y in zip(a, b):
        ix, iy = Image.fromarray(x), Image.fromarray(y)
        for name in sims:
            fn = getattr(imagehash, name)
            hx, hy = fn(ix), fn(iy)
            sims[name].append(1.0 - (hx - hy) / hx.hash.size)
    return {k: round(float(np.mean(v)), 4) for k, v in sims.items()}


@torch.no_grad()
def reconstruct(g, e, pixels: np.ndarray, batch: int = 500) -> np.ndarray:
    out = []
    for i in range(0, len(pixels), batch):
        x = pixels_to_images(torch.from_numpy(pixels[i:i + batch]))
        out.append(images_to_pixels(g(e(x))).numpy())
    return np.concatenate(out)


def evaluate(cfg: PackConfig, work: Path) -> dict:
    g, e, o = gan.load_generator(cfg, work), crg_encoder.load(cfg, work), oracle.load(cfg, work)
    pixels, faces = held_out(cfg.eval_samples, cfg.resolution, cfg.correlated_attributes)
    recon = reconstruct(g, e, pixels)
    x, y = pixels.astype(np.float32) / 255, recon.astype(np.float32) / 255
    z = latents(cfg.seed + _LATENT_SEED, cfg.eval_samples, cfg.latent_dim)
    with torch.no_grad():
        z_cycle = e(g(torch.from_numpy(z))).numpy()
    p_x, p_y = oracle.predict(o, pixels), oracle.predict(o, recon)
    figures = {
        "renderer_images_per_s": round(renderer_speed(cfg.resolution), 1),
        "held_out_samples": len(pixels),
        "reconstruction": {"mae": round(float(np.abs(x - y).mean()), 4),
                           "mse": round(float(((x - y) ** 2).mean()), 5),
                           **hash_similarity(pixels[:500], recon[:500])},
        "latent_cycle_mse": round(float(((z - z_cycle) ** 2).mean()), 4),
        "attribute_agreement_after_encoding": {
            a: round(float(((p_x[:, i] > 0.5) == (p_y[:, i] > 0.5)).mean()), 4)
            for i, a in enumerate(renderer.ATTRIBUTES)},
        "edit_success": _edit_success(cfg, work, g, o, z[:500]),
    }
    checkpoints.record(work, "evaluation", figures)
    print(f"[evaluate] reconstruction {figures['reconstruction']} latent cycle mse {figures['latent_cycle_mse']}")
    return figures


def _edit_success(cfg: PackConfig, work: Path, g, o, z: np.ndarray) -> dict:
    report = checkpoints.read_report(work)["interfacegan"]["attributes"]
    normals = np.load(work / "directions" / "interfacegan.npy")
    result = {}
    for i, a in enumerate(renderer.ATTRIBUTES):
        s = report[a]["recommended_strength"]
        up = interfacegan.score_latents(g, o, (z + s * normals[i]).astype(np.float32))[:, i]
        down = interfacegan.score_latents(g, o, (z - s * normals[i]).astype(np.float32))[:, i]
        result[a] = {"strength": round(s, 3), "positive_after_plus": round(float((up > 0.5).mean()), 4),
                     "negative_after_minus": round(float((down < 0.5).mean()), 4)}
    return result
