"""Choose a refined direction's upper-lip weight (`refine_lip_weights`, docs/methods.md "Refined").

For one attribute, the refined direction is fitted at each candidate weight (training/methods/refine.py, from
the work folder's InterFaceGAN normal) and measured twice: on held-out generated faces (the classifier gain
kept, against InterFaceGAN's) and on the real faces' **tuning** split (never the held-out one): each face
inverted faithfully, the edit at InterFaceGAN's recommended strength pasted like EditPhoto, the returned photo
measured (moved share by the annotators, identity cosine, upper-lip darkening; training/evaluation/real_faces.py).

    python -m training.evaluation.refine_weights --config training/configs/digiface64.json \\
        --attribute smile --weights 30,60,100

Needs `make real-faces` and a work folder with the oracle and InterFaceGAN's directions (runs/<pack>/, e.g. from
`python -m training restore`). Prints a table and the weight the rule picks (`choose`), and writes
out/refine_weights/<pack>_<attribute>.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from facedit_core.pack import load_pack
from facedit_faces.detect import FaceDetector
from training.config import PackConfig
from training.data.datasets import latents
from training.evaluation import real_faces as rf
from training.evaluation import real_faces_report as report
from training.generators import gan
from training.labels import annotate, oracle, source
from training.methods import refine
from training.third_party.wheels import DEFAULT_DIR


MIN_GAIN_KEPT = 0.5  # of InterFaceGAN's classifier gain at +strength on generated faces
MIN_MOVED = 0.8  # share of tuning faces whose attribute moved the asked way at +strength (the target)


def choose(rows: dict) -> tuple[float | None, str]:
    """The rule for the upper-lip weight, on the + edit (the one that darkens the lip): the largest weight that
    keeps MIN_GAIN_KEPT of InterFaceGAN's gain and moves MIN_MOVED of the tuning faces; when none moves that
    many, the largest weight among those keeping the gain that move as many faces as the best of them.
    rows: as `run` returns them ("interfacegan" and "lip <w>"). Returns (weight or None, why)."""
    base = rows["interfacegan"]["generated"]["+"]["gain"]
    kept = {float(k.split()[1]): r for k, r in rows.items()
            if k != "interfacegan" and r["generated"]["+"]["gain"] >= MIN_GAIN_KEPT * base}
    if not kept:
        return None, f"no weight keeps {MIN_GAIN_KEPT:.0%} of InterFaceGAN's gain: try smaller ones"
    moved = {w: r["tuning_photos"]["+"]["moved_annotator"] for w, r in kept.items()}
    enough = [w for w, m in moved.items() if m >= MIN_MOVED]
    if enough:
        return max(enough), f"the largest weight keeping the gain that moves >= {MIN_MOVED:.0%} of the tuning faces"
    best = max(moved.values())
    return (max(w for w, m in moved.items() if m == best),
            f"no weight moves {MIN_MOVED:.0%} of the tuning faces; the largest of those moving the most ({best:.0%})")


def run(cfg: PackConfig, work: Path, attribute: str, weights: list[float], photos_dir: Path, out: Path) -> dict:
    g, o = gan.load_generator(cfg, work), oracle.load(cfg, work)
    attrs, start = source.attributes(cfg), refine.interfacegan_normals(work)[attribute]
    template = np.asarray(annotate.template(work), np.float64)
    z_eval = latents(cfg.seed + refine.EVAL_SEED, cfg.refine_eval_samples, cfg.latent_dim)
    models = rf.PackModels(load_pack(cfg.pack), threads=cfg.threads)
    base = next(r for r, _ in models.directions if r.id == f"interfacegan/{attribute}")
    candidates, generated = [(base, start)], {}
    for w in weights:
        t0 = time.perf_counter()
        c = cfg.replace(refine_lip_weights={**cfg.refine_lip_weights, attribute: w})
        objective = refine.Objective(c, attrs, attribute, template)
        n = refine.fit(g, o, objective, start, c)
        generated[w] = refine.measure(g, o, objective, n, z_eval, c.refine_strength)
        candidates.append((dataclasses.replace(base, id=f"refined/{attribute} lip {w:g}", method="refined"), n))
        print(f"[refine-weights] {attribute} lip {w:g}: fitted in {time.perf_counter() - t0:.0f} s", flush=True)
    start_terms = refine.measure(g, o, refine.Objective(cfg, attrs, attribute, template), start, z_eval,
                                 cfg.refine_strength)
    det = FaceDetector(threads=cfg.threads, folder=DEFAULT_DIR)
    photos = rf.load_photos(det, models, photos_dir, splits=("tuning",))
    # the candidates, each with InterFaceGAN's strength range
    result = rf.evaluate(models, rf.INVERSIONS["faithful"](models), photos, det, methods=("interfacegan", "refined"),
                         directions=candidates)
    edits = report.aggregate(result, "tuning")["edits"]
    rows = {"interfacegan": {"generated": start_terms, "tuning_photos": edits[base.id]}}
    for w in weights:
        rows[f"lip {w:g}"] = {"generated": generated[w], "tuning_photos": edits[f"refined/{attribute} lip {w:g}"]}
    print(f"| {attribute} | gain kept + / - | moved - / + | identity - / + | upper lip darkening - / + |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        gen, ph = r["generated"], r["tuning_photos"]
        kept = " / ".join(f"{gen[s]['gain'] / start_terms[s]['gain']:.2f}" for s in "+-")
        print(f"| {name} | {kept} | {report.signs(ph, 'moved_annotator')} | {report.signs(ph, 'identity_cosine')} | "
              f"{report.signs(ph, 'upper_lip_darkening', 3)} |")
    weight, why = choose(rows)
    print(f"[refine-weights] the rule picks {weight if weight is None else f'{weight:g}'}: {why}", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{cfg.pack}_{attribute}.json"
    path.write_text(json.dumps({"attribute": attribute, "weights": weights, "faces": len(result["faces"]),
                                "rows": rows, "chosen": weight, "why": why}, indent=2))
    print(f"[refine-weights] wrote {path}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.evaluation.refine_weights", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="training/configs/digiface64.json")
    p.add_argument("--work", help="the work folder (default runs/<pack>)")
    p.add_argument("--attribute", required=True, help="an attribute with a region in refine_regions")
    p.add_argument("--weights", required=True, help="comma-separated candidate upper-lip weights")
    p.add_argument("--photos", type=Path, default=Path("build/real_faces"), help="the folder of `make real-faces`")
    p.add_argument("--out", type=Path, default=Path("out/refine_weights"))
    p.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: the config's)")
    args = p.parse_args(argv)
    cfg = PackConfig.load(args.config)
    cfg = cfg.replace(threads=args.threads) if args.threads else cfg
    if args.attribute not in cfg.refine_regions:
        raise SystemExit(f"{args.attribute!r} has no region in refine_regions {cfg.refine_regions}: nothing to weigh")
    torch.set_num_threads(cfg.threads)
    run(cfg, Path(args.work or f"runs/{cfg.pack}"), args.attribute, [float(w) for w in args.weights.split(",")],
        args.photos, args.out)


if __name__ == "__main__":
    main()
