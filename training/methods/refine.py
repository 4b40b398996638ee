"""The `refine` step: directions refined for pasting into photos (method "refined", docs/methods.md).

A photo edit adds the change G(z + s n) - G(z) to the photo (EditPhoto's delta paste), so whatever else a
direction changes shows on the photo. On digiface64 the InterFaceGAN smile direction also darkens the upper
lip and the eyes: on a photo that reads as a moustache (looked at on the real faces of `make evaluate-real`).
The generator ties those changes to its grins non-linearly, so projecting another boundary out of the
normal (InterFaceGAN's conditional edit) cannot remove them; here the direction itself is optimised.

Per attribute, starting from the pack's InterFaceGAN normal, a unit direction n is fitted by Adam
(`refine_steps` steps, each on `refine_batch` fresh latents z ~ N(0, I), at the offset a = `refine_strength`):

    maximise  gain(n) = mean over z of  oracle logit of the attribute at G(z + a n)  -  at G(z)
    minus     refine_outside_weight * mean squared luminance change outside the attribute's region
              refine_lip_weights[attribute] * mean darkening of the upper lip (nose to lips)
              refine_keep_weight    * mean squared logit change of the other attributes

Regions (`refine_regions`, attribute -> region) come from the pack's alignment template, in crop pixels:
"mouth" is an ellipse around the mouth corners; the upper lip the band between the nose tip and the mouth;
the face an ellipse around the eyes and mouth. An attribute without a region (a pose, the skin tone) changes
the whole face: its refined direction is InterFaceGAN's normal unchanged (fitted with the other attributes
kept only, on digiface64 yaw gained classifier logit but changed the other attributes more: 1.6 -> 2.0), so
that "refined" has a direction for every attribute and can be a pack's default method.

Luminance is in [0, 1]. The figures (report.json "refine", and each record's metrics) compare InterFaceGAN's
direction and the refined one on `refine_eval_samples` held-out latents. The strength range is the 5-95 %
span of n . z over the InterFaceGAN step's latents, as for InterFaceGAN.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from facedit_core import images
from training import checkpoints
from training.config import PackConfig
from training.data import annotators
from training.data.datasets import latents
from training.generators import gan
from training.labels import annotate, oracle, source
from training.methods import direction_sets, interfacegan

REGIONS = ("mouth",)
_TRAIN_SEED = 21   # the latents of the fit (torch generator seed, cfg.seed added)
EVAL_SEED = 23    # held-out latents of the figures


def _as_float(m: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v.astype(np.float32)) for k, v in m.items()}


class Objective:
    """The terms of the fit for one attribute, on generated images (N, 3, R, R) in [-1, 1]."""

    def __init__(self, cfg: PackConfig, attrs: tuple[str, ...], attribute: str, template: np.ndarray):
        self.index = attrs.index(attribute)
        self.others = [i for i, a in enumerate(attrs) if a != attribute]
        self.region = cfg.refine_regions.get(attribute)
        if self.region is not None and self.region not in REGIONS:
            raise ValueError(f"refine_regions: {attribute!r} -> {self.region!r}; regions: {list(REGIONS)}")
        if self.region is not None and attribute not in cfg.refine_lip_weights:
            raise ValueError(f"refine_lip_weights has no weight for {attribute!r}, which has a region")
        self.lip_weight = float(cfg.refine_lip_weights.get(attribute, 0.0))
        m = _as_float(annotators.regions(template, cfg.resolution))
        self.lip = m["upper_lip"]  # the skin between the nose and the lips: darkened, it reads as a moustache
        self.outside = m["face"] * (1 - m["mouth"]) * (1 - self.lip)
        self.cfg = cfg
        self.luma = torch.from_numpy(images.LUMA).view(1, 3, 1, 1)

    def terms(self, x0: torch.Tensor, x1: torch.Tensor, l0: torch.Tensor, l1: torch.Tensor,
              sign: float = 1.0) -> dict[str, torch.Tensor]:
        """Before (x0, logits l0) and after (x1, l1) an edit towards `sign` (+1: more of the attribute)
        -> the mean of every term over the batch."""
        dl = ((x1 - x0) * self.luma).sum(1) / 2  # luminance change, [0, 1] units
        return {"gain": sign * (l1[:, self.index] - l0[:, self.index]).mean(),
                "lip_darkening": (torch.relu(-dl) * self.lip).sum((1, 2)).mean() / self.lip.sum(),
                "outside_ms": (dl ** 2 * self.outside).sum((1, 2)).mean() / self.outside.sum(),
                "others_ms": ((l1[:, self.others] - l0[:, self.others]) ** 2).mean()}

    def loss(self, t: dict[str, torch.Tensor]) -> torch.Tensor:
        c = self.cfg
        return (-t["gain"] + c.refine_keep_weight * t["others_ms"] + c.refine_outside_weight * t["outside_ms"]
                + self.lip_weight * t["lip_darkening"])


def fit(g, o, objective: Objective, start: np.ndarray, cfg: PackConfig) -> np.ndarray:
    """The refined unit direction (D,) from the unit `start` (D,)."""
    n = torch.from_numpy(start.astype(np.float32)).clone().requires_grad_(True)
    opt = torch.optim.Adam([n], lr=cfg.refine_lr)
    gen = torch.Generator().manual_seed(cfg.seed + _TRAIN_SEED + objective.index)
    for _ in range(cfg.refine_steps):
        z = torch.randn(cfg.refine_batch, cfg.latent_dim, generator=gen)
        with torch.no_grad():
            x0 = g(z)
            l0 = o(x0)
        loss = 0.0
        for sign in (1.0, -1.0):  # both ways: the gain is the logit's change towards the sign
            x1 = g(z + sign * cfg.refine_strength * n / n.norm())
            loss = loss + objective.loss(objective.terms(x0, x1, l0, o(x1), sign)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = n.detach().numpy()
    return (out / np.linalg.norm(out)).astype(np.float32)


@torch.no_grad()
def measure(g, o, objective: Objective, n: np.ndarray, z: np.ndarray, strength: float) -> dict[str, dict]:
    """The terms at z + strength * n ("+") and z - strength * n ("-") on held-out latents z (N, D)."""
    sums: dict[str, dict[str, float]] = {"+": {}, "-": {}}
    for i in range(0, len(z), 100):
        zb = torch.from_numpy(z[i:i + 100])
        x0 = g(zb)
        l0 = o(x0)
        for key, sign in (("+", 1.0), ("-", -1.0)):
            x1 = g(zb + sign * strength * torch.from_numpy(n))
            for k, v in objective.terms(x0, x1, l0, o(x1), sign).items():
                sums[key][k] = sums[key].get(k, 0.0) + float(v) * len(zb)
    return {key: {k: round(v / len(z), 5) for k, v in terms.items()} for key, terms in sums.items()}


def interfacegan_normals(work: Path) -> dict[str, np.ndarray]:
    path = work / "directions" / "interfacegan.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `python -m training interfacegan --config <pack config>` "
                                "first (refine starts from InterFaceGAN's normals)")
    vectors = np.load(path.with_suffix(".npy"))
    return {r["attribute"]: v for r, v in zip(json.loads(path.read_text()), vectors)}


def train(cfg: PackConfig, work: Path) -> dict:
    if source.has_ground_truth(cfg):
        print(f"[refine] {cfg.pack} has no alignment template (rendered faces, no photos): nothing to refine",
              flush=True)
        return {}
    g, o = gan.load_generator(cfg, work), oracle.load(cfg, work)
    attrs, starts = source.attributes(cfg), interfacegan_normals(work)
    template = np.asarray(annotate.template(work), np.float64)
    z_eval = latents(cfg.seed + EVAL_SEED, cfg.refine_eval_samples, cfg.latent_dim)
    z_range = latents(cfg.seed + interfacegan.LATENT_SEED, cfg.svm_samples, cfg.latent_dim)
    records, vectors, figures = [], [], {}
    for a in attrs:
        t0 = time.perf_counter()
        objective = Objective(cfg, attrs, a, template)
        # without a region the attribute changes the whole face: InterFaceGAN's normal is kept as it is
        n = fit(g, o, objective, starts[a], cfg) if objective.region else starts[a].astype(np.float32)
        before = measure(g, o, objective, starts[a], z_eval, cfg.refine_strength)
        after = measure(g, o, objective, n, z_eval, cfg.refine_strength) if objective.region else before
        lo, hi = np.percentile(z_range @ n, [5, 95])
        span = round(float(hi - lo), 3)
        figures[a] = {"region": objective.region, "cosine_to_interfacegan": round(float(n @ starts[a]), 4),
                      "interfacegan": before, "refined": after, "seconds": round(time.perf_counter() - t0, 1)}
        for key in "+-":
            b, f = before[key], after[key]
            print(f"[refine] {a:12s} {key}{cfg.refine_strength:g}: gain {b['gain']:.2f} -> {f['gain']:.2f}  lip "
                  f"darkening {b['lip_darkening']:.4f} -> {f['lip_darkening']:.4f}  outside ms {b['outside_ms']:.4f}"
                  f" -> {f['outside_ms']:.4f}  others ms {b['others_ms']:.3f} -> {f['others_ms']:.3f}", flush=True)
        print(f"[refine] {a:12s} {figures[a]['seconds']} s", flush=True)
        records.append(direction_sets.record(
            id=f"refined/{a}", attribute=a, method="refined", strength_min=-span, strength_max=span,
            strength_limit=cfg.strength_limit,
            metrics={f"{k}{'_minus' if key == '-' else ''}_{name}": v
                     for name, fig in (("refined", after), ("interfacegan", before))
                     for key, terms in fig.items() for k, v in terms.items()},
            provenance={"method": ("InterFaceGAN normal refined for photo pasting (training/methods/refine.py)"
                                   if objective.region else "InterFaceGAN normal, unchanged (no region to refine for)"),
                        "region": objective.region or "none",
                        "steps": cfg.refine_steps, "batch": cfg.refine_batch, "strength": cfg.refine_strength,
                        "weights": {"outside": cfg.refine_outside_weight, "upper_lip": objective.lip_weight,
                                    "keep": cfg.refine_keep_weight},
                        "held_out_latents": cfg.refine_eval_samples, "scorer": source.source(cfg).scorer}))
        vectors.append(n)
    direction_sets.save(work, "refined", records, np.stack(vectors))
    checkpoints.record(work, "refine", figures)
    return figures
