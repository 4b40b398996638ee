"""The `evaluate` step of packs whose attributes are measured (attributes.source "annotators"), where
no ground truth exists: what can be measured on the frozen generator's faces and on real photos.

- Encoder reconstruction (CRG paper Table 2 format: MAE, MSE of pixels in [0, 1], dhash / phash /
  whash similarity) on held-out generated faces; on the real photos that ship offline, detected
  (MTCNN) and aligned to the pack's template like the services align a photo; and on the first
  `eval_lfw_faces` faces of skimage's LFW subset (25x25 gray), compared on luminance.
- Latent cycle MSE(z, E(G(z))).
- Edit success: held-out latents moved by each direction's recommended extremes, scored by the
  classifier (present after +max, absent after min, other labels changed after +max), and FaceNet
  distance after +max; ISTRC (radians walked on FaceNet's sphere) on `eval_istrc_samples` faces.

Writes report.json "evaluation" and <work>/real_reconstructions.npy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facedit_core import align, images
from facedit_faces.detect import FaceDetector
from training import checkpoints
from training.config import PackConfig
from training.data.datasets import latents
from training.encoders import crg_encoder, facenet
from training.evaluation import edits
from training.evaluation.similarity import hash_similarity
from training.generators import gan
from training.labels import annotate, oracle, source
from training.labels.oracle import score_latents
from training.methods import direction_sets
from training.models import encode, generate
from training.third_party.wheels import DEFAULT_DIR

EVAL_SEED = 13  # held-out latents (the export's example faces come from EVAL_SEED + 1)


def real_photos() -> list[tuple[str, np.ndarray]]:
    """Real photos that ship offline: skimage's astronaut (Eileen Collins, NASA, public domain)."""
    from skimage import data

    return [("skimage.data.astronaut", data.astronaut())]


def aligned_real_faces(det, template: np.ndarray, size: int) -> tuple[np.ndarray, list[str]]:
    """Every face the detector (facedit_faces.detect.FaceDetector) finds in real_photos(),
    aligned to the template: (N, size, size, 3) uint8."""
    crops, names = [], []
    for name, photo in real_photos():
        for d in det.detect(photo):
            crops.append(align.crop(photo, align.similarity(d.landmarks, template), size))
            names.append(name)
    return np.stack(crops), names


def lfw_faces(det, template: np.ndarray, size: int, count: int = 100) -> tuple[np.ndarray, np.ndarray, int]:
    """Real faces that ship offline at low resolution: the first `count` images of
    skimage.data.lfw_subset() (Labeled Faces in the Wild, 25x25 grayscale, tightly cropped; its
    first 100 images are faces). Each is detected (MTCNN), aligned to the template like a photo
    and replicated to RGB: (faces (N, size, size, 3) uint8 gray, valid (N, size, size) bool = the
    crop pixels that come from inside the 25x25 image, number of images tried)."""
    from skimage import data

    if not 0 <= count <= 100:
        raise ValueError(f"eval_lfw_faces: {count}; skimage.data.lfw_subset holds 100 faces")
    crops, valid = [], []
    images = (data.lfw_subset()[:count] * 255).round().astype(np.uint8)
    inside = np.full(images.shape[1:] + (3,), 255, np.uint8)
    for gray in images:
        rgb = np.repeat(gray[:, :, None], 3, axis=2)
        found = det.detect(rgb)
        if found:
            a = align.similarity(found[0].landmarks, template)
            crops.append(align.crop(rgb, a, size))
            valid.append(align.crop(inside, a, size)[:, :, 0] > 250)
    if not crops:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), bool), len(images)
    return np.stack(crops), np.stack(valid), len(images)


def _gray_reconstruction(g, e, pixels: np.ndarray, valid: np.ndarray) -> dict:
    """Reconstruction of gray faces: the generated face's luminance is compared with the photo's
    on the valid pixels (MAE, MSE); outside them the reconstruction takes the photo's (black)
    pixels so that the hashes (which are computed on luminance anyway) see the same frame."""
    recon = generate(g, encode(e, pixels))
    lum = images.luminance(recon)
    recon_gray = np.repeat(np.clip(lum.round(), 0, 255).astype(np.uint8)[..., None], 3, axis=3)
    recon_gray = np.where(valid[..., None], recon_gray, pixels)
    x, y = pixels[..., 0].astype(np.float32) / 255, recon_gray[..., 0].astype(np.float32) / 255
    d = (x - y)[valid]
    return {"samples": len(pixels), "mae": round(float(np.abs(d).mean()), 4), "mse": round(float((d ** 2).mean()), 5),
            "valid_share": round(float(valid.mean()), 4), **hash_similarity(pixels, recon_gray)}


def _reconstruction(g, e, pixels: np.ndarray) -> tuple[dict, np.ndarray]:
    recon = generate(g, encode(e, pixels))
    x, y = pixels.astype(np.float32) / 255, recon.astype(np.float32) / 255
    return {"samples": len(pixels), "mae": round(float(np.abs(x - y).mean()), 4),
            "mse": round(float(((x - y) ** 2).mean()), 5), **hash_similarity(pixels, recon)}, recon


def evaluate(cfg: PackConfig, work: Path) -> dict:
    g, e, o = gan.load_generator(cfg, work), crg_encoder.load(cfg, work), oracle.load(cfg, work)
    attrs = list(source.attributes(cfg))
    template = np.array(annotate.template(work), np.float32)
    z = latents(cfg.seed + EVAL_SEED, cfg.eval_samples, cfg.latent_dim)
    gen_pixels = generate(g, z)
    rec_gen, _ = _reconstruction(g, e, gen_pixels[:500])
    with torch.no_grad():
        cycle = float(((e(g(torch.from_numpy(z))).numpy() - z) ** 2).mean())
    det = FaceDetector(folder=DEFAULT_DIR)
    real, names = aligned_real_faces(det, template, cfg.resolution)
    rec_real, recon_real = _reconstruction(g, e, real)
    lfw, valid, tried = lfw_faces(det, template, cfg.resolution, cfg.eval_lfw_faces)
    rec_lfw = {**_gray_reconstruction(g, e, lfw, valid), "tried": tried} if len(lfw) else {"samples": 0, "tried": tried}
    # edit success: held-out latents moved by each direction's recommended extreme, scored by the oracle
    records, vectors = direction_sets.collect(work)
    n_edit = min(300, len(z))
    base = oracle.predict(o, gen_pixels[:n_edit])
    net, n_id = facenet.FaceNet(), min(64, len(z))
    ref = net.embed(gen_pixels[:n_id])
    identity_figures = {"other_faces": round(float(facenet.distance(ref, np.roll(ref, 1, axis=0)).mean()), 4),
                        "encoded_generated": round(float(facenet.distance(
                            ref, net.embed(generate(g, encode(e, gen_pixels[:n_id])))).mean()), 4)}

    def row(attribute: str, hi: float, up: np.ndarray, down: np.ndarray, moved: np.ndarray) -> dict:
        """Scores of the first len(up) faces after +hi / the minimum, FaceNet of the first n_id after +hi."""
        i, n = attrs.index(attribute), len(up)
        others = [j for j in range(len(attrs)) if j != i]
        leak = float(np.mean([((up[:, j] > 0.5) != (base[:n, j] > 0.5)).mean() for j in others]))
        return {"strength_max": hi, "faces": n, "positive_after_plus": round(float((up[:, i] > 0.5).mean()), 4),
                "negative_after_minus": round(float((down[:, i] <= 0.5).mean()), 4),
                "leakage_after_plus": round(leak, 4),
                "identity_distance_after_plus": round(float(facenet.distance(
                    net.embed(moved), ref[:len(moved)]).mean()), 4)}

    success = {}
    for r in records:
        if r["method"] == "sefa" and r["id"].startswith("sefa/component_"):
            continue
        v = vectors[r["row"]]
        up = score_latents(g, o, (z[:n_edit] + r["strength_max"] * v).astype(np.float32))
        down = score_latents(g, o, (z[:n_edit] + r["strength_min"] * v).astype(np.float32))
        moved = generate(g, (z[:n_id] + r["strength_max"] * v).astype(np.float32))
        success[r["id"]] = row(r["attribute"], r["strength_max"], up, down, moved)
    # ISTRC (not a latent direction): each face through FaceNet, walked on the sphere, mapped back
    method = edits.istrc_method(cfg, work)
    if method is not None:
        n = min(n_edit, method.max_samples or n_edit)
        for a, (lo, hi) in method.strengths.items():
            up_z = method.edit(z[:n], a, hi, ())
            up = score_latents(g, o, up_z)
            down = score_latents(g, o, method.edit(z[:n], a, lo, ()))
            success[f"istrc/{a}"] = row(a, hi, up, down, generate(g, up_z[:n_id]))
    figures = {"reconstruction_generated": rec_gen, "latent_cycle_mse": round(cycle, 4),
               "identity": identity_figures,
               "reconstruction_real": {**rec_real, "photos": sorted(set(names))},
               "reconstruction_real_lfw": rec_lfw, "edit_success": success}
    checkpoints.record(work, "evaluation", figures)
    np.save(work / "real_reconstructions.npy", np.stack([real, recon_real]))
    print(f"[evaluate] generated {rec_gen}\n[evaluate] real {rec_real}\n[evaluate] LFW subset {rec_lfw}", flush=True)
    return figures
