"""`facedit edit-photo`: every face of one photo, or of every photo of folders, edited and
blended back; a progress bar on stderr, one line per photo and a summary (faces found, failures).

A photo that fails (no face, unreadable, refused) does not stop the others; the exit code is 0
when all were edited, PARTIAL (3) when some failed, and the failure's own code (e.g. REJECTED, 4)
when all failed.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
from pathlib import Path

from facedit_client.cli import exits
from facedit_client.cli.commands import IMAGE_SUFFIXES, edits_of, fidelity_of, image_files, out_format, write
from facedit_client.cli.output import Progress, inversion, message_dict, print_json, score
from facedit_client.client import Client
from facedit_client.errors import FaceditError


@dataclasses.dataclass
class Result:
    """One photo: where it was written and its faces (box x0, y0, x1, y1 in pixels, score, latent_id,
    attribute scores before/after; with --faithful the inversion report: identity_before/after,
    pixel_error_before/after, steps, seconds), or why it failed (a gRPC status name, or USAGE for a
    local file)."""

    input: str
    output: str | None = None
    faces: list[dict] = dataclasses.field(default_factory=list)
    error: dict | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)  # the server's, e.g. a pose edit pasted as a change


def outputs(inputs: list[Path], out: str, single_file: bool, ext: str) -> list[Path]:
    """Where each photo goes: -o itself for one photo given as a file with -o an image path, else
    out/<name>.<ext> (a name met twice gets _2, _3, ...)."""
    if single_file and Path(out).suffix.lower() in IMAGE_SUFFIXES:
        return [Path(out)]
    taken: set[Path] = set()
    paths = []
    for path in inputs:
        target, n = Path(out) / f"{path.stem}.{ext}", 1
        while target in taken:
            n += 1
            target = Path(out) / f"{path.stem}_{n}.{ext}"
        taken.add(target)
        paths.append(target)
    return paths


def edit_one(client: Client, photo: Path, target: Path, args, edits, fmt: str) -> Result:
    result = Result(str(photo))
    try:
        resp = client.edit_photo(photo, edits, keep=args.keep, format=fmt, max_faces=args.max_faces,
                                 replace=args.replace, fidelity=fidelity_of(args))
    except FaceditError as err:
        result.error = {"code": err.code, "message": err.message, "trace_id": err.trace_id}
        return result
    except OSError as err:
        result.error = {"code": "USAGE", "message": f"cannot read {photo}: {err.strerror or err}", "trace_id": None}
        return result
    result.output = str(write(target, resp.image))
    result.warnings = list(resp.warnings)
    attrs = sorted({q.attribute for q in resp.quality})
    result.faces = [{"box": [round(v, 1) for v in f.box], "score": round(f.score, 4), "latent_id": f.latent_id,
                     "scores_before": {a: f.scores_before[a] for a in attrs if a in f.scores_before},
                     "scores_after": {a: f.scores_after[a] for a in attrs if a in f.scores_after},
                     **({"inversion": message_dict(f.inversion)} if f.HasField("inversion") else {})}
                    for f in resp.faces]
    return result


def edit_photo(client: Client, args) -> int:
    inputs = image_files(args.photos)
    single = len(args.photos) == 1 and Path(args.photos[0]).is_file()
    fmt = out_format(args.out, args.format) if single else (args.format or "png")
    targets = outputs(inputs, args.out, single, "jpg" if fmt == "jpeg" else "png")
    edits = edits_of(args)
    results: list[Result | None] = [None] * len(inputs)
    progress = Progress(len(inputs), "photos", None if args.progress is None else args.progress)
    faces = failed = 0
    progress.update(0)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(edit_one, client, p, t, args, edits, fmt): i
                   for i, (p, t) in enumerate(zip(inputs, targets))}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            result = results[futures[future]] = future.result()
            faces += len(result.faces)
            failed += result.error is not None
            progress.update(done, f"faces found: {faces}, failed: {failed}")
    progress.close()
    return report([r for r in results if r is not None], args.json)


def face_words(face: dict) -> str:
    """"smile 0.924->0.980", and with --faithful ", faithful: identity 0.51->0.95, ..." (Result.faces)."""
    words = " ".join(f"{a} {score(face['scores_before'][a])}->{score(face['scores_after'][a])}"
                     for a in face["scores_after"])
    if "inversion" in face:
        words = ", ".join(w for w in (words, inversion(face["inversion"])) if w)
    return words


def report(results: list[Result], as_json: bool) -> int:
    edited = [r for r in results if r.error is None]
    failed = [r for r in results if r.error is not None]
    faces = sum(len(r.faces) for r in results)
    if as_json:
        print_json({"photos": [dataclasses.asdict(r) for r in results], "edited": len(edited),
                    "failed": len(failed), "faces": faces})
    else:
        for r in results:
            if r.error is None:
                detail = "; ".join(face_words(f) for f in r.faces)
                print(f"{r.input} -> {r.output}: {len(r.faces)} face{'s' * (len(r.faces) != 1)}"
                      + (f" ({detail})" if detail else ""))
                for warning in r.warnings:
                    print(f"  warning: {warning}")
            else:
                print(f"{r.input}: FAILED {r.error['code']}: {r.error['message']}")
        print(f"{len(results)} photo{'s' * (len(results) != 1)}: {len(edited)} edited, {len(failed)} failed; "
              f"{faces} face{'s' * (faces != 1)} found")
    if not failed:
        return exits.OK
    return exits.PARTIAL if edited else exits.for_code(failed[0].error["code"])
