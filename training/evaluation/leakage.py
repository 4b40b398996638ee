"""Quick leakage check of a pack's directions on rendered faces, with and without
conditional manipulation (the full evaluation is `python -m training evaluate`).

    python -m training.evaluation.leakage --pack-dir model_store/synth --edit beard --keep age

For N rendered faces whose edited attribute is set absent (for +s) or present (for -s)
by the renderer: encode -> move by +/-s along the direction (projected off the kept
attributes' directions when --keep is given) -> generate -> classify. Prints the share of
faces whose edited label ends on the asked side, and for each kept attribute the share
whose label did not change and the mean |probability change|, with and without keep.
Uses only the pack's exported ONNX models and directions.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from facedit_core.compose import compose
from training.data import renderer


def measure(pack_dir: Path, edit: str, keep: list[str], strength: float, n: int, seed: int,
            method: str = "interfacegan") -> dict:
    manifest = json.loads((pack_dir / "manifest.json").read_text())
    attrs, res = manifest["attributes"], manifest["resolution"]
    sess = {k: ort.InferenceSession(str(pack_dir / f"{k}.onnx"), providers=["CPUExecutionProvider"])
            for k in ("encoder", "generator", "classifier")}
    vectors = np.load(pack_dir / "directions.npy", allow_pickle=False)
    rows = {r["id"]: r["row"] for r in json.loads((pack_dir / "directions.json").read_text())}

    def direction(attribute: str) -> np.ndarray:
        key = f"{method}/{attribute}"
        if key not in rows:
            raise SystemExit(f"{pack_dir} has no direction {key!r}")
        return vectors[rows[key]]

    def scores(z):
        return sess["classifier"].run(None, {"pixels": sess["generator"].run(None, {"z": z})[0]})[0]

    result = {}
    for sign, start in ((+1, 0.0), (-1, 1.0)):
        faces = renderer.with_attribute(renderer.sample_faces(seed, n), edit, start)
        z = sess["encoder"].run(None, {"pixels": renderer.render(faces, size=res)})[0]
        before = scores(z)
        for label, kept_names in (("with_keep", keep), ("without_keep", [])):
            kept = np.stack([direction(k) for k in kept_names]) if kept_names else \
                np.zeros((0, vectors.shape[1]), np.float32)
            delta, _ = compose([direction(edit)], [sign * strength], kept)
            after = scores((z + delta).astype(np.float32))
            i = attrs.index(edit)
            entry = {"edited_on_asked_side": round(float(((after[:, i] > 0.5) == (sign > 0)).mean()), 3)}
            for k in keep:
                j = attrs.index(k)
                entry[k] = {"label_unchanged": round(float(((after[:, j] > 0.5) == (before[:, j] > 0.5)).mean()), 3),
                            "mean_abs_change": round(float(np.abs(after[:, j] - before[:, j]).mean()), 3)}
            result[f"{'+' if sign > 0 else '-'}{strength:g} {label}"] = entry
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.evaluation.leakage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack-dir", default="model_store/synth", type=Path)
    p.add_argument("--edit", required=True)
    p.add_argument("--keep", action="append", default=[])
    p.add_argument("--method", default="interfacegan", help="which method's directions (ids <method>/<attribute>)")
    p.add_argument("--strength", type=float, default=3.0)
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--seed", type=int, default=2024)
    args = p.parse_args(argv)
    print(json.dumps(measure(args.pack_dir, args.edit, args.keep, args.strength, args.n, args.seed, args.method),
                     indent=2))


if __name__ == "__main__":
    main()
