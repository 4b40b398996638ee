"""Every edit method the evaluation measures, behind one signature (a registry).

An edit method is an `EditMethod`: its name, and per attribute it can edit the documented
strength range and its own accuracy figures, plus one function

    edit(z, attribute, strength, keep) -> z'
      z: (N, latent_dim) float32 latents; attribute: one of the pack's attributes;
      strength: float in the method's own units (the documented range is what the
      evaluation uses); keep: attributes to hold fixed (conditional manipulation), each
      one of the method's `keepable`; returns z' (N, latent_dim) float32.

Linear direction sets are found generically: every <work>/directions/<method>.json with a
record `<method>/<attribute>` gives a method whose edit is z + s * n', where n' is that
direction projected off the kept attributes' directions of the same method by
facedit_core.compose (what the directions service does at request time).
Attributes without a `<method>/<attribute>` record (e.g. SeFa components no attribute
moves enough) are not editable by that method; records of other names (e.g. free words) are
not evaluated, since no attribute label says what they should do.

Non-linear methods (ISTRC, training/methods/istrc.py: latent -> FaceNet embedding -> classifier gradient steps ->
latent, `istrc_method`) add one factory to `FACTORIES`: a function (cfg, work) -> EditMethod,
or None when the work folder lacks what it needs. A slow method may set `max_samples`: the
evaluation then uses the first max_samples faces of each face set for it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from facedit_core.compose import compose
from training.config import PackConfig
from training.labels import source
from training.methods import istrc

EditFn = Callable[[np.ndarray, str, float, Sequence[str]], np.ndarray]

# a method's own accuracy figures, copied from its direction records' metrics when present
ACCURACY_KEYS = ("validation_accuracy", "all_samples_accuracy", "validation_r2", "label_effect")


@dataclasses.dataclass(frozen=True)
class EditMethod:
    """One edit method. strengths: attribute -> (strength_min < 0, strength_max > 0), the
    documented range (removing / adding the attribute); accuracy: attribute -> {figure: value};
    keepable: attributes `keep` may name."""

    name: str
    edit: EditFn
    strengths: dict[str, tuple[float, float]]
    accuracy: dict[str, dict]
    keepable: frozenset[str]
    description: str = ""
    # evaluate on at most this many faces of each set (None: all); for methods whose edit is slow
    max_samples: int | None = None

    @property
    def attributes(self) -> list[str]:
        return list(self.strengths)


def linear(name: str, records: list[dict], vectors: np.ndarray, attributes: Sequence[str]) -> EditMethod:
    """A method from one direction set: records with ids `<name>/<attribute>` (one of `attributes`,
    the pack's) and unit rows."""
    by_attr = {r["attribute"]: (r, v) for r, v in zip(records, vectors)
               if r["id"] == f"{name}/{r['attribute']}" and r["attribute"] in attributes}
    directions = {a: v.astype(np.float32) for a, (_, v) in by_attr.items()}

    def edit(z: np.ndarray, attribute: str, strength: float, keep: Sequence[str]) -> np.ndarray:
        kept = np.stack([directions[k] for k in keep]) if keep else np.zeros((0, z.shape[1]), np.float32)
        delta, _ = compose([directions[attribute]], [strength], kept)
        return (z + delta[None]).astype(np.float32)

    provenance = next(iter(by_attr.values()))[0].get("provenance", {}) if by_attr else {}
    return EditMethod(
        name=name, edit=edit,
        strengths={a: (float(r["strength_min"]), float(r["strength_max"])) for a, (r, _) in by_attr.items()},
        accuracy={a: {k: r["metrics"][k] for k in ACCURACY_KEYS if k in r.get("metrics", {})}
                  for a, (r, _) in by_attr.items()},
        keepable=frozenset(directions),
        description=f"linear direction set ({provenance.get('method', name)}); keep = projection "
                    f"off the kept attributes' {name} directions")


def linear_methods(work: Path, attributes: Sequence[str]) -> list[EditMethod]:
    """One method per direction set saved in <work>/directions/*.json, in name order."""
    out = []
    for path in sorted((work / "directions").glob("*.json")):
        records = json.loads(path.read_text())
        vectors = np.load(path.with_suffix(".npy"), allow_pickle=False)
        method = linear(path.stem, records, vectors, attributes)
        if method.strengths:
            out.append(method)
    return out


def istrc_method(cfg: PackConfig, work: Path, classifier: str = "logistic") -> EditMethod | None:
    """ISTRC (training/methods/istrc.py): each face through G -> FaceNet -> constant-length steps along the
    attribute classifier's gradient on the unit sphere (keep: the kept classifiers' gradients
    projected off every step) -> mapping M -> z'. Strength in radians walked; the documented range
    is +-istrc_strength. FaceNet per face is slow on CPU, so the evaluation uses the first
    `eval_istrc_samples` faces of each set. classifier "logistic" (method `istrc`, what packs
    serve) or "mlp" (method `istrc_mlp`, when trained with istrc_mlp_layers > 0). None when the
    work folder lacks them."""
    if not (work / istrc.CHECKPOINT).exists() or (classifier == "mlp" and not istrc.Istrc.has_mlp(work)):
        return None
    model = istrc.Istrc.load(cfg, work, classifier)
    report = json.loads((work / "report.json").read_text()).get("istrc", {}) if (work / "report.json").exists() else {}
    figures = report.get("classifiers" if classifier == "logistic" else "mlp_classifiers", {})
    attributes = list(model.attributes)  # the pack's attributes, in the classifiers' order
    what = "logistic classifier's gradient (constant)" if classifier == "logistic" else \
        f"MLP classifier's gradient ({cfg.istrc_mlp_layers} FC layers, taken at every step)"
    return EditMethod(
        name="istrc" if classifier == "logistic" else "istrc_mlp",
        edit=lambda z, a, s, keep: model.edit(z, a, s, tuple(keep)),
        strengths={a: (-cfg.istrc_strength, cfg.istrc_strength) for a in attributes},
        accuracy={a: {k: figures[a][k] for k in ACCURACY_KEYS if k in figures.get(a, {})} for a in attributes},
        keepable=frozenset(attributes), max_samples=cfg.eval_istrc_samples,
        description=f"ISTRC: FaceNet embedding (unit sphere) walked along the {what} in steps of "
                    f"{cfg.istrc_step:g}, mapped back to z by the MLP; strength = radians walked; keep = the kept "
                    f"classifiers' gradients projected off every step; on the first {cfg.eval_istrc_samples} "
                    f"faces of each set (eval_istrc_samples)")


def istrc_mlp_method(cfg: PackConfig, work: Path) -> EditMethod | None:
    """ISTRC with the paper's MLP classifiers (istrc_mlp_layers > 0), method `istrc_mlp`."""
    return istrc_method(cfg, work, "mlp")


# Non-linear methods: factories (cfg, work) -> EditMethod | None. Add one entry per method.
FACTORIES: tuple[Callable[[PackConfig, Path], EditMethod | None], ...] = (istrc_method, istrc_mlp_method)


def load_methods(cfg: PackConfig, work: Path) -> list[EditMethod]:
    """Every linear direction set of the work folder, then every registered factory's method."""
    methods = linear_methods(work, source.attributes(cfg))
    for factory in FACTORIES:
        method = factory(cfg, work)
        if method is not None:
            methods.append(method)
    return methods
