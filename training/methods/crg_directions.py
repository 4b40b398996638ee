"""The `crg` step: CRG directions (Dogan et al., "Cyclic Reverse Generator", sec. 3.3-3.4, 4.4):
the normalised mean difference of encoded reference faces with and without each attribute.

The references depend on the pack's attribute source (training/labels/source.py):

- "renderer": true reference pairs. `crg_pairs` rendered identities, each drawn twice with the
  renderer's true counterfactual - the attribute absent (value 0.0) and present (1.0),
  everything else identical - and encoded with the CRG encoder. The single-pair direction of
  the first pair, (z_with - z_without) normalised (eq. 3), and the averaged direction, the
  normalised mean of all per-pair differences (sec. 3.4); the averaged one is saved. Its
  projections: `crg_eval_samples` held-out rendered faces, labelled by ground truth (> 0.5).
- "annotators": no true pairs exist for a frozen generator's faces, so the references are the
  annotated generated faces (training/labels/annotate.py), encoded: the first half's
  min(crg_pairs, a quarter) faces with the highest measurement minus as many with the lowest;
  the projections are the other half, labelled by the annotators' probability (> 0.5).

Conservative strength range, from the projections' two Gaussians (facedit_core.reference,
shared with the gateway's CreateDirection): with gap = mu_pos - mu_neg > 0,
    strength_max =  clip(min(gap, gap + 2 (sd_pos - sd_neg)), gap / 2, strength_limit)
    strength_min = -clip(min(gap, gap + 2 (sd_neg - sd_pos)), gap / 2, strength_limit)
- adding the attribute moves the mean negative face at most to the mean positive face, less
when that would push the top of the negatives' mean +/- 2 sd bulk past the top of the
positives' bulk (the paper's "stay within 2 sd"), but at least to the midpoint between the
means; removing is the mirror image. Strength is an offset along the unit direction
(z' = z + s n, eq. 4), so it moves a face's projection by exactly s. If the held-out Gaussians
are not in order (gap <= 0: the direction does not separate labelled faces, seen only with an
untrained encoder), the same rule is applied to the projections of the references themselves
(always in order) and the provenance says so.

Figures (per attribute, in report.json under "crg" and in each record's metrics): the two
Gaussians, the recommended range, the separability of the held-out faces (accuracy of the
midpoint threshold between the two means, and d'), for true pairs the cosine between the
single-pair and the averaged direction (and the mean / min cosine of every single-pair
direction to the average) and the Gaussians on the single-pair direction, the cosine to the
InterFaceGAN direction when that step ran, and the edit success at the recommended range
(held-out negatives whose oracle label turns positive at +strength_max, positives that turn
negative at strength_min).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from facedit_core import reference
from training import checkpoints
from training.config import PackConfig
from training.data import renderer
from training.data.datasets import held_out
from training.encoders import crg_encoder
from training.generators import gan
from training.labels import annotate, oracle, source
from training.labels.oracle import score_latents
from training.methods import direction_sets
from training.models import encode, generate

METHOD = "crg"
_STREAM = 3  # reference pairs: identities of data stream 3 (gan 0, encoder 1, oracle 2)


def reference_pairs(cfg: PackConfig, attribute: str) -> tuple[np.ndarray, np.ndarray]:
    """`crg_pairs` identities rendered with `attribute` = 1.0 and = 0.0: (with, without) pixels."""
    faces = renderer.sample_faces((cfg.seed + _STREAM) * 1_000_003, cfg.crg_pairs, cfg.correlated_attributes)
    present = renderer.render(renderer.with_attribute(faces, attribute, 1.0), size=cfg.resolution)
    absent = renderer.render(renderer.with_attribute(faces, attribute, 0.0), size=cfg.resolution)
    return present, absent


def _sig(x: float, digits: int = 5) -> float:
    """Rounded to `digits` significant digits (a tiny range of an untrained encoder stays non-zero)."""
    return float(f"{float(x):.{digits}g}")


def _round(d: dict) -> dict:
    return {k: (_sig(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def fit_attribute(cfg: PackConfig, e, attribute: str, z_eval: np.ndarray, labels: np.ndarray) -> dict:
    """One attribute: the averaged direction (D,), the single-pair one, and their figures."""
    if cfg.crg_pairs < 1:
        raise ValueError(f"crg_pairs must be >= 1, got {cfg.crg_pairs}")
    if labels.sum() < 2 or (~labels).sum() < 2:
        raise ValueError(f"{attribute}: {int(labels.sum())} positive and {int((~labels).sum())} negative held-out "
                         f"faces; raise crg_eval_samples (now {cfg.crg_eval_samples})")
    with_attr, without_attr = reference_pairs(cfg, attribute)
    z_with, z_without = encode(e, with_attr), encode(e, without_attr)
    averaged, diff_norm = reference.direction(z_with, z_without)
    singles = reference.pair_directions(z_with, z_without)
    cosines = singles @ averaged
    single = singles[0]
    held = reference.describe(z_eval[labels], z_eval[~labels], averaged, cfg.strength_limit)
    held_single = reference.describe(z_eval[labels], z_eval[~labels], single, cfg.strength_limit)
    pairs = reference.describe(z_with, z_without, averaged, cfg.strength_limit)
    ranged = held if held["metrics"]["gap"] > 0 else pairs
    metrics = {**held["metrics"], "validation_accuracy": held["metrics"]["midpoint_accuracy"],
               "single_pair_cosine": float(cosines[0]), "pair_cosine_mean": float(cosines.mean()),
               "pair_cosine_min": float(cosines.min()), "mean_pair_difference_norm": diff_norm,
               "pairs_positive_mean": pairs["metrics"]["positive_mean"],
               "pairs_positive_std": pairs["metrics"]["positive_std"],
               "pairs_negative_mean": pairs["metrics"]["negative_mean"],
               "pairs_negative_std": pairs["metrics"]["negative_std"]}
    return {"direction": averaged, "single": single, "strength_min": ranged["strength_min"],
            "strength_max": ranged["strength_max"], "metrics": metrics,
            "range_from": "held-out faces" if ranged is held else
                          "reference pairs (the held-out Gaussians are not in order: gap <= 0)",
            "single_pair": {k: held_single["metrics"][k] for k in
                            ("positive_mean", "positive_std", "negative_mean", "negative_std",
                             "midpoint_accuracy", "d_prime")}
                           | {"strength_min": held_single["strength_min"],
                              "strength_max": held_single["strength_max"]}}


def _record(cfg: PackConfig, attribute: str, fit: dict, references: dict, projections: str) -> dict:
    return direction_sets.record(
        id=f"{METHOD}/{attribute}", attribute=attribute, method=METHOD,
        strength_min=_sig(fit["strength_min"]), strength_max=_sig(fit["strength_max"]),
        strength_limit=cfg.strength_limit, metrics={k: _sig(v) for k, v in fit["metrics"].items()},
        provenance={**references, "encoder": "encoder.pt (CRG encoder of this pack)", "projections": projections,
                    "range_rule": reference.RANGE_RULE, "range_from": fit["range_from"],
                    "validation_accuracy": "accuracy of the midpoint threshold between the two "
                                           "Gaussian means on the held-out faces"})


def _rendered(cfg: PackConfig, e) -> tuple[dict, list[dict], np.ndarray, dict]:
    """Fits, records, held-out latents and their labels from true reference pairs (renderer source)."""
    pixels, faces = held_out(cfg.crg_eval_samples, cfg.resolution, cfg.correlated_attributes)
    z_eval = encode(e, pixels)
    labels = {a: faces.attribute(a) > 0.5 for a in source.attributes(cfg)}
    fits = {a: fit_attribute(cfg, e, a, z_eval, labels[a]) for a in labels}
    references = {"method": "CRG: normalised mean of the encoded reference-pair differences (eq. 3, sec. 3.4)",
                  "pairs": cfg.crg_pairs,
                  "pair_source": "training/data/renderer.py counterfactuals: the same identity with the "
                                 "attribute = 0.0 and = 1.0 (data stream 3)"}
    projections = f"{len(pixels)} held-out rendered faces, labelled positive when the ground-truth value > 0.5"
    records = [_record(cfg, a, fits[a], references, projections) for a in labels]
    return fits, records, z_eval, labels


def _annotated(cfg: PackConfig, work: Path, e) -> tuple[dict, list[dict], np.ndarray, dict]:
    """Fits, records, held-out latents and their labels from annotated generated faces (annotators source)."""
    ann, stats = annotate.load_annotations(work), annotate.stats(work)
    found = np.where(ann["found"].astype(bool))[0]
    z_enc = encode(e, generate(gan.load_generator(cfg, work), ann["z"][found]))
    p = annotate.probabilities(ann["values"][found], stats)
    half = len(found) // 2  # references from the first half, projections measured on the second
    k = min(cfg.crg_pairs, half // 4)
    if k < 1:
        raise ValueError(f"crg: {len(found)} annotated faces are too few for references; raise attributes.samples")
    fits, records, labels = {}, [], {}
    for i, a in enumerate(source.attributes(cfg)):
        order = np.argsort(p[:half, i])
        z_pos, z_neg = z_enc[:half][order[-k:]], z_enc[:half][order[:k]]
        unit, norm = reference.direction(z_pos, z_neg)
        labels[a] = p[half:, i] > 0.5
        if labels[a].sum() < 2 or (~labels[a]).sum() < 2:
            raise ValueError(f"crg: {a}: {int(labels[a].sum())} positive and {int((~labels[a]).sum())} negative "
                             "held-out annotated faces; raise attributes.samples")
        held = reference.describe(z_enc[half:][labels[a]], z_enc[half:][~labels[a]], unit, cfg.strength_limit)
        refs = reference.describe(z_pos, z_neg, unit, cfg.strength_limit)
        ranged = held if held["metrics"]["gap"] > 0 else refs
        fits[a] = {"direction": unit, "strength_min": ranged["strength_min"], "strength_max": ranged["strength_max"],
                   "metrics": {**held["metrics"], "validation_accuracy": held["metrics"]["midpoint_accuracy"],
                               "mean_difference_norm": norm},
                   "range_from": "held-out faces" if ranged is held else
                                 "references (the held-out Gaussians are not in order: gap <= 0)"}
        records.append(_record(cfg, a, fits[a], {
            "method": "CRG: normalised mean of encoded positive minus negative references (eq. 3)",
            "references": f"{k} + {k} generated faces with the highest / lowest measured {a}",
            "labels": source.source(cfg).scorer},
            f"{len(found) - half} other annotated faces, labelled positive when the annotators' probability > 0.5"))
    return fits, records, z_enc[half:], labels


def _edit_success(cfg: PackConfig, work: Path, fits: dict, z_eval: np.ndarray, labels: dict) -> dict:
    """Held-out faces moved by the recommended range, generated and scored by the oracle."""
    g, o = gan.load_generator(cfg, work), oracle.load(cfg, work)
    out = {}
    for i, a in enumerate(source.attributes(cfg)):
        n, f = fits[a]["direction"], fits[a]
        up = score_latents(g, o, (z_eval[~labels[a]] + f["strength_max"] * n).astype(np.float32))[:, i]
        down = score_latents(g, o, (z_eval[labels[a]] + f["strength_min"] * n).astype(np.float32))[:, i]
        out[a] = {"positive_after_plus": round(float((up > 0.5).mean()), 4),
                  "negative_after_minus": round(float((down < 0.5).mean()), 4)}
    return out


def train(cfg: PackConfig, work: Path) -> dict:
    t0 = time.perf_counter()
    e = crg_encoder.load(cfg, work)
    rendered = source.has_ground_truth(cfg)
    fits, records, z_eval, labels = _rendered(cfg, e) if rendered else _annotated(cfg, work, e)
    attrs = list(fits)
    vectors = np.stack([fits[a]["direction"] for a in attrs])
    direction_sets.save(work, METHOD, records, vectors)

    figures = {"references": "rendered pairs" if rendered else "annotated generated faces",
               "pairs": cfg.crg_pairs, "eval_samples": len(z_eval),
               "direction_cosine": [[round(float(v), 3) for v in row] for row in vectors @ vectors.T],
               "attributes": {a: {**_round({k: float(v) for k, v in fits[a]["metrics"].items()}),
                                  "strength_min": _sig(fits[a]["strength_min"], 4),
                                  "strength_max": _sig(fits[a]["strength_max"], 4),
                                  "range_from": fits[a]["range_from"],
                                  **({"single_pair_direction": _round(fits[a]["single_pair"])}
                                     if "single_pair" in fits[a] else {})}
                              for a in attrs}}
    ig = work / "directions" / "interfacegan.npy"
    if ig.exists():
        normals = np.load(ig, allow_pickle=False)
        if normals.shape == vectors.shape:
            for i, a in enumerate(attrs):
                figures["attributes"][a]["cosine_to_interfacegan"] = round(float(vectors[i] @ normals[i]), 4)
    try:
        success = _edit_success(cfg, work, fits, z_eval, labels)
    except FileNotFoundError:  # no generator / oracle checkpoint: the directions stand without this figure
        success = None
    for a in attrs:
        if success:
            figures["attributes"][a]["edit_success"] = success[a]
    figures["seconds"] = round(time.perf_counter() - t0, 1)
    checkpoints.record(work, METHOD, figures)
    for a in attrs:
        f = figures["attributes"][a]
        single = f" single/avg cos {f['single_pair_cosine']:.3f}" if "single_pair_cosine" in f else ""
        print(f"[crg] {a:12s} pos {f['positive_mean']:+.2f}±{f['positive_std']:.2f} "
              f"neg {f['negative_mean']:+.2f}±{f['negative_std']:.2f} range {f['strength_min']:+.2f}.."
              f"{f['strength_max']:+.2f} midpoint acc {f['midpoint_accuracy']:.3f}{single}", flush=True)
    return figures
