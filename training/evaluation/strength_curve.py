"""How a photo edit's effect and its cost in identity grow with strength, on the real faces.

The real-face evaluation (training/evaluation/real_faces.py) judges each direction at its recommended
strength only. This runs the same measurement (faithful inversion, the edit pasted like EditPhoto, the
returned photo measured) at fractions of that strength, for one direction of a built pack:

    python -m training.evaluation.strength_curve --pack digiface64 --direction refined/skin_tone \\
        --fractions 0.25,0.5,0.75,1 [--split held-out]

Prints a table (moved share by the annotators, FaceNet identity cosine before/after, faces the
detector lost, upper-lip darkening, per sign) and writes out/strength_curve/<pack>_<method>_<attribute>.json.
Needs `make real-faces` (the photos). Nothing is tuned on its output.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from facedit_core.pack import load_pack
from facedit_faces.detect import FaceDetector
from training.evaluation import real_faces as rf
from training.evaluation import real_faces_report as report
from training.third_party import real_faces
from training.third_party.wheels import DEFAULT_DIR


def run(models: rf.PackModels, photos: list[rf.Photo], det: FaceDetector, direction: str, fractions: list[float],
        split: str, fidelity: str) -> dict:
    """{fraction: {"+": figures, "-": figures}} of `direction` at fractions of its recommended strength on the
    faces of `photos` in `split` (figures as real_faces_report.aggregate gives them)."""
    found = [(r, v) for r, v in models.directions if r.id == direction]
    if not found:
        known = ", ".join(sorted(r.id for r, _ in models.directions))
        raise SystemExit(f"no linear direction {direction!r} in pack {models.pack.name!r}; known: {known}")
    record, vector = found[0]
    scaled = [(dataclasses.replace(record, id=f"{direction} x{f:g}", strength_min=f * record.strength_min,
                                   strength_max=f * record.strength_max), vector) for f in fractions]
    result = rf.evaluate(models, rf.INVERSIONS[fidelity](models), photos, det, methods=(record.method,),
                         directions=scaled)
    edits = report.aggregate(result, split)["edits"]
    return {f: edits[f"{direction} x{f:g}"] for f in fractions}


def table(curve: dict) -> str:
    lines = ["| x recommended | strength - / + | moved - / + | identity - / + | lost - / + | upper-lip darkening - / + |",
             "|---|---|---|---|---|---|"]
    for f, e in curve.items():
        lines.append(f"| {f:g} | {report.signs(e, 'strength')} | {report.signs(e, 'moved_annotator')} | "
                     f"{report.signs(e, 'identity_cosine')} | {report.signs(e, 'lost', 0)} | "
                     f"{report.signs(e, 'upper_lip_darkening', 3)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m training.evaluation.strength_curve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pack", default="digiface64")
    p.add_argument("--direction", required=True, help="a linear direction's id, e.g. refined/skin_tone")
    p.add_argument("--fractions", default="0.25,0.5,0.75,1", help="comma-separated multiples of the recommended strength")
    p.add_argument("--split", default="held-out", choices=real_faces.SPLITS)
    p.add_argument("--fidelity", default="faithful", choices=sorted(rf.INVERSIONS))
    p.add_argument("--photos", type=Path, default=real_faces.DEFAULT_OUT, help="the folder of `make real-faces`")
    p.add_argument("--out", type=Path, default=Path("out/strength_curve"))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    try:
        fractions = [float(x) for x in args.fractions.split(",")]
    except ValueError:
        raise SystemExit(f"--fractions must be numbers separated by commas, got {args.fractions!r}") from None
    if not fractions or any(f <= 0 for f in fractions):
        raise SystemExit(f"--fractions must be positive, got {args.fractions!r}")
    models = rf.PackModels(load_pack(args.pack), threads=args.threads)
    det = FaceDetector(threads=args.threads, folder=DEFAULT_DIR)
    photos = rf.load_photos(det, models, args.photos, splits=(args.split,))
    curve = run(models, photos, det, args.direction, fractions, args.split, args.fidelity)
    print(f"{args.direction} on the {args.split} real faces ({args.fidelity} inversion, pasted like EditPhoto):")
    print(table(curve))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{args.pack}_{args.direction.replace('/', '_')}.json"
    path.write_text(json.dumps({"pack": args.pack, "direction": args.direction, "split": args.split,
                                "fidelity": args.fidelity, "curve": {f"{f:g}": e for f, e in curve.items()}}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
