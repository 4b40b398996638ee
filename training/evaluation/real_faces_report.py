"""`python -m training evaluate-real`: runs training/evaluation/real_faces.py on the photos of
`make real-faces` and writes, next to the pack's model card (model_store/<pack>/real_faces/<fidelity>/):

  report.json          every figure per split (tuning, held-out), per method, attribute and sign;
                       each face's reconstruction figures
  tuning.png,          contact sheets, one row per face: original | reconstruction | the returned
  held_out.png         photo's face after each edit of the default method (- then + per attribute,
                       cut where the face was), all at the pack's resolution, 256 colours; only faces
                       whose photo is public domain (real_faces.publishable), so they may be committed

and then (training/__main__.py) the model card's "Real faces" section (training/packs/export.py
rewrite_card: model_card.md written again from manifest.json, evaluation.json and report.json). Sheets of every face, of any licence, at twice the size, and faces.json
(every face's figures of every edit) go to out/real_faces/<pack>/ (not in git) for looking at.
"""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from facedit_core.pack import load_pack
from facedit_faces.detect import FaceDetector
from training.data import annotators
from training.evaluation import real_faces as rf
from training.third_party import real_faces as data
from training.third_party.wheels import DEFAULT_DIR

FOLDER = "real_faces"  # in the pack folder
REPORT = "report.json"
FACES = "faces.json"  # every face's figures of every edit, in the sheets folder (out/real_faces/<pack>/)
# issue 16's targets (faithful mode, held-out faces); the CRG paper's Table 2 for the hashes
TARGETS = {"dhash": 0.871, "phash": 0.848, "whash": 0.892, "facenet_cosine": 0.85,
           "moved": 0.80, "identity_after_edit": 0.80}
POSE = annotators.POSE  # the identity target is for non-pose edits


def _mean(values) -> float | None:
    v = [x for x in values if x is not None]
    return round(float(np.mean(v)), 4) if v else None


def aggregate(result: dict, split: str) -> dict:
    """The per-face figures of one split, averaged: reconstruction and every edit."""
    faces = [f for f in result["faces"] if f["split"] == split]
    if not faces:
        return {"faces": 0}
    rec = {k: _mean(f[k] for f in faces) for k in ("mae", "dhash", "phash", "whash", "facenet_cosine",
                                                     "facenet_cosine_resolution")}
    edits = {}
    for key in faces[0]["edits"]:
        direction, sign = key.rsplit(" ", 1)
        e = [f["edits"][key] for f in faces]
        info = result["directions"][direction]
        edits.setdefault(direction, {"attribute": info["attribute"], "method": info["method"]})[sign] = {
            "strength": info[sign], "faces": len(e), "lost": sum(x["lost"] for x in e),
            "moved_annotator": _mean(float(x["moved_annotator"]) for x in e),
            "moved_classifier": _mean(float(x["moved_classifier"]) for x in e),
            "moved_rendering": _mean(float(x["moved_rendering"]) for x in e),
            "change_iqr": _mean(x["change_iqr"] for x in e),
            "identity_cosine": _mean(x["identity_cosine"] for x in e),
            "upper_lip_darkening": _mean(x.get("upper_lip_darkening") for x in e),
            "ms_per_face": result["edit_ms_per_face"][key]}
    return {"faces": len(faces), "photos": len({f["file"] for f in faces}),
            "reconstruction": {**rec, "ms_per_face": result["reconstruct_ms_per_face"]},
            "detect_ms_per_face": result.get("detect_ms_per_face"), "edits": edits}


def _f(x, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def signs(edit: dict, key: str, digits: int = 2) -> str:
    """"minus / plus" of one figure of an aggregated edit ({"-": {...}, "+": {...}}), "-" where missing."""
    return f"{_f(edit.get('-', {}).get(key), digits)} / {_f(edit.get('+', {}).get(key), digits)}"


def _met(x, target: float) -> str:
    return "" if x is None else (" (met)" if x >= target else " (missed)")


def tables(report: dict) -> list[str]:
    """Markdown of one report: the set, then per split the reconstruction and the edits."""
    lines = [f"Measured on pack version {report['version']} with fidelity `{report['fidelity']}` (paste mode "
             f"`{report['paste']}`) on {report['date']}: {report['command']}. Photos: {report['photos_note']}",
             "", "Targets (issue 16, faithful mode, held-out faces): dhash >= 0.871, phash >= 0.848, whash >= 0.892, "
             "FaceNet cosine >= 0.85; edits moved the asked way on >= 80 % of faces, identity cosine >= 0.8 "
             "after non-pose edits.", ""]
    for split in data.SPLITS:
        s = report["sets"].get(split, {"faces": 0})
        if not s["faces"]:
            continue
        r = s["reconstruction"]
        lines += [f"#### {split}: {s['faces']} faces in {s['photos']} photos", "",
                  "| reconstruction | MAE | dhash | phash | whash | FaceNet cos(face, recon) | FaceNet cos at 160 vs "
                  f"{report['resolution']} px | ms per face |", "|---|---|---|---|---|---|---|---|",
                  f"| {report['fidelity']} | {_f(r['mae'], 3)} | {_f(r['dhash'], 3)}{_met(r['dhash'], TARGETS['dhash'])} | "
                  f"{_f(r['phash'], 3)}{_met(r['phash'], TARGETS['phash'])} | {_f(r['whash'], 3)}"
                  f"{_met(r['whash'], TARGETS['whash'])} | {_f(r['facenet_cosine'], 3)}"
                  f"{_met(r['facenet_cosine'], TARGETS['facenet_cosine'])} | {_f(r['facenet_cosine_resolution'], 3)} | "
                  f"{r['ms_per_face']} |", "",
                  "| direction | moved - / + (annotators, returned photo) | classifier, returned photo | "
                  "classifier, 64-px rendering | identity cos - / + | upper lip darkening - / + | lost | ms per face |",
                  "|---|---|---|---|---|---|---|---|"]
        for d, e in s["edits"].items():
            lo, hi = e.get("-", {}), e.get("+", {})
            lines.append(f"| {d} ({signs(e, 'strength')}) | {signs(e, 'moved_annotator')} | "
                         f"{signs(e, 'moved_classifier')} | {signs(e, 'moved_rendering')} | {signs(e, 'identity_cosine')} | "
                         f"{signs(e, 'upper_lip_darkening', 3)} | {lo.get('lost', 0) + hi.get('lost', 0)} | "
                         f"{hi.get('ms_per_face', '-')} |")
        lines.append("")
    lines.append(f"FaceNet cosine between faces of different photos (the same person may appear in two photos): "
                 f"{_f(report['other_people_cosine'], 3)}. Times are of one process on a shared 2-core CPU: "
                 f"detecting and aligning {report['sets'].get('held-out', {}).get('detect_ms_per_face')} ms per face "
                 "(whole photos), reconstruction per face in one batch, an edit's rendering and paste per face; "
                 "measuring is not counted. Identity cosines after an edit compare the photo's face before and "
                 "after, both cut at 160 px; the reconstruction's compares the two 64-px faces, upsampled. Upper lip "
                 "darkening: the mean luminance lost (0-1) between the nose and the mouth of the returned photo's face, "
                 "cut where the face was (a moustache-like band shows as about 0.05 and more).")
    return lines


def card_section(report: dict | None, pack_version: str) -> list[str]:
    """The model card's "Real faces" section (training/packs/model_card.py)."""
    if not report:
        return []
    stale = [] if report["version"] == pack_version else [
        f"**These figures were measured on version {report['version']}, not this one: rerun `make evaluate-real`.**", ""]
    folder = f"{FOLDER}/{report['fidelity']}"
    return ["", f"## Real faces, fidelity `{report['fidelity']}`", "", *stale,
            "Every face that the detector finds in the real photos that packages ship (`make real-faces`, "
            "training/third_party/real_faces.py; the held-out photos are never used for tuning), aligned like "
            "EditPhoto aligns them; edits pasted into the photo and measured on the returned photo "
            "(training/evaluation/real_faces.py). Contact sheets of the public-domain faces: "
            f"[tuning]({folder}/tuning.png), [held-out]({folder}/held_out.png).", "", *tables(report)]


def contact_sheet(sheet: dict, rows: list[int], attributes: list[str], scale: int = 1) -> Image.Image:
    """One row per face: original | reconstruction | (attribute -, attribute +) for each attribute."""
    columns = [("orig", sheet["original"]), ("recon", sheet["reconstruction"])]
    columns += [(f"{a}{s}", sheet["edits"][(a, s)]) for a in attributes for s in ("-", "+") if (a, s) in sheet["edits"]]
    size = sheet["original"].shape[1] * scale
    head, gap = 12, 2
    img = Image.new("RGB", (len(columns) * (size + gap), head + len(rows) * (size + gap)), "white")
    draw = ImageDraw.Draw(img)
    for c, (label, pix) in enumerate(columns):
        draw.text((c * (size + gap) + 2, 0), label[:11], fill="black")
        for r, k in enumerate(rows):
            face = Image.fromarray(pix[k])
            img.paste(face.resize((size, size), Image.Resampling.NEAREST) if scale > 1 else face,
                      (c * (size + gap), head + r * (size + gap)))
    return img


def run(pack_dir: Path, fidelity: str = "fast", photos_dir: Path = data.DEFAULT_OUT, paste: str = "delta",
        methods: tuple[str, ...] = rf.METHODS, threads: int = 1, sheets_dir: Path | None = None) -> dict:
    """Evaluate the pack in `pack_dir` on the real faces; write report.json and the sheets."""
    if fidelity not in rf.INVERSIONS:
        raise SystemExit(f"--fidelity {fidelity!r}: known inversions {sorted(rf.INVERSIONS)}")
    t0 = time.perf_counter()
    pack = load_pack(pack_dir.name, pack_dir.parent)
    models = rf.PackModels(pack, threads)
    det = FaceDetector(threads=threads, folder=DEFAULT_DIR)
    try:
        photos = rf.load_photos(det, models, photos_dir)
    except data.RealFacesMissing as err:
        raise SystemExit(str(err)) from None
    result = rf.evaluate(models, rf.INVERSIONS[fidelity](models), photos, det, paste, methods)
    sheet = result.pop("sheet")
    lost = [p.entry["file"] for p in photos if len(p.faces) != p.entry["faces_when_added"]]
    report = {"pack": pack.name, "version": pack.version, "fidelity": fidelity, "paste": paste,
              "resolution": pack.resolution, "date": dt.date.today().isoformat(),
              "command": f"`make evaluate-real PACK={pack.name}` (python -m training evaluate-real --config "
                         f"training/configs/{pack.name}.json --fidelity {fidelity})",
              "photos_note": f"{len(photos)} photos of {len({p.entry['package'] for p in photos})} packages, "
                             f"{len(result['faces'])} faces found"
                             + (f" (a different count than when added: {lost})" if lost else "") + ".",
              "targets": TARGETS, "other_people_cosine": result["other_people_cosine"],
              "sets": {s: aggregate(result, s) for s in data.SPLITS},
              "photos": [{k: p.entry[k] for k in ("file", "package", "status", "split")} | {"faces": len(p.faces)}
                         for p in photos],
              "faces": [{k: v for k, v in f.items() if k != "edits"} for f in result["faces"]],
              "seconds": round(time.perf_counter() - t0, 1)}
    out = pack_dir / FOLDER / fidelity
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT).write_text(json.dumps(report, indent=1) + "\n")
    faces = result["faces"]
    if sheets_dir is not None:  # every face's every edit, and sheets of every face: not committed
        sheets_dir = sheets_dir / fidelity
        sheets_dir.mkdir(parents=True, exist_ok=True)
        (sheets_dir / FACES).write_text(json.dumps(faces, indent=1) + "\n")
    for split, name in (("tuning", "tuning.png"), ("held-out", "held_out.png")):
        rows = [k for k, f in enumerate(faces) if f["split"] == split and f["status"] in data.PUBLISHABLE]
        if rows:  # 256 colours keep the committed picture near 100 KB
            contact_sheet(sheet, rows, models.attributes).quantize(
                256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out / name, optimize=True)
        if sheets_dir is not None:
            every = [k for k, f in enumerate(faces) if f["split"] == split]
            contact_sheet(sheet, every, models.attributes, scale=2).save(sheets_dir / name)
    print("\n".join(tables(report)), flush=True)
    print(f"[evaluate-real] wrote {out} in {report['seconds']} s", flush=True)
    return report


def load_reports(pack_dir: Path) -> dict | None:
    """The reports of every fidelity evaluated, {fidelity: report} (faithful first), or None."""
    found = {}
    for fidelity in sorted(rf.INVERSIONS, key=lambda f: f != "faithful"):
        path = pack_dir / FOLDER / fidelity / REPORT
        if path.exists():
            found[fidelity] = json.loads(path.read_text())
    return found or None
