"""The `facedit` subcommands but edit-photo (cli/photos.py): each takes (client, args) and
returns an exit code (cli/exits.py). Images go to files (-o), results to stdout: a short text
for people, or with --json one JSON object (the response without image bytes and tensors, plus
the files written)."""
from __future__ import annotations

import sys
from pathlib import Path

from facedit_client.cli import exits, images
from facedit_client.cli.output import inversion, message_dict, print_json, score, signed, table
from facedit_client.client import Client
from facedit_client.requests import Edit, Face, FaceSource, method_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def out_format(out: str | Path, fmt: str | None) -> str:
    """--format, else from the output's extension (.jpg/.jpeg: jpeg), else png."""
    if fmt:
        return fmt
    return "jpeg" if Path(out).suffix.lower() in (".jpg", ".jpeg") else "png"


def write(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    if path.parent != Path("."):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def image_files(specs: list[str]) -> list[Path]:
    """Files and folders (their image files, sorted, not recursive) -> image paths; ValueError if none."""
    paths: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                           and not f.name.startswith("."))
            if not found:
                raise ValueError(f"{spec}: no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise ValueError(f"{spec}: no such file or folder")
    return paths


def fidelity_of(args) -> str:
    """--faithful -> "faithful" (the face optimised against the photo, seconds), else "fast"."""
    return "faithful" if getattr(args, "faithful", False) else "fast"


def faces_of(specs: list[str], args) -> list[FaceSource]:
    """Face specs (seed:<n>, id:<latent id>, image files) -> FaceSources, --faithful applied to the image
    files; --faithful without any image file among them is a usage error (it would change nothing)."""
    faces = [Face.parse(spec, fidelity_of(args)) for spec in specs]
    if fidelity_of(args) == "faithful" and not any(f.HasField("image") for f in faces):
        raise ValueError(f"--faithful inverts a photo of a face: give an image file, not {' '.join(specs)} "
                         f"(a latent id of a faithful face renders it faithfully already)")
    return faces


def edits_of(args) -> list[Edit]:
    """--edit target=strength and --text "phrase=theta" flags -> Edits."""
    edits = [Edit.parse(e, method=args.method) for e in args.edit]
    edits += [Edit.parse(t, text=True, text_mode=args.text_mode) for t in getattr(args, "text", [])]
    if not edits:
        raise ValueError("give at least one --edit <attribute>=<strength> (or --text \"<phrase>=<theta>\")")
    return edits


def attributes(client: Client, args) -> int:
    resp = client.attributes()
    if args.json:
        print_json(message_dict(resp))
        return exits.OK
    default = method_name(resp.default_method)
    print(f"pack {resp.pack.name} {resp.pack.version}: latent {resp.latent_dim}-d, default method {default}, "
          f"attributes {', '.join(resp.attributes)}")
    rows = []
    for d in sorted(resp.directions, key=lambda d: (d.attribute, d.method, d.id)):
        acc = d.metrics.get("validation_accuracy")
        rows.append([d.id, d.attribute, method_name(d.method) + ("*" if d.method == resp.default_method else ""),
                     f"{signed(d.strength_min)}..{signed(d.strength_max)}", f"{d.strength_limit:g}",
                     f"{d.space or 'latent'} {d.dim or ''}".strip(), "" if acc is None else f"{acc:.3f}"])
    table(rows, ["DIRECTION", "ATTRIBUTE", "METHOD", "RECOMMENDED", "LIMIT", "SPACE", "VAL.ACC"])
    print("* the default method: `--edit smile=1.5` uses it; name another with --method or a direction id "
          "(--edit istrc/smile=0.2)")
    return exits.OK


def edit(client: Client, args) -> int:
    fmt = out_format(args.out, args.format)
    if args.original and out_format(args.original, args.format) != fmt:
        raise ValueError(f"-o {args.out} and --original {args.original}: the gateway answers both in one image "
                         f"format; give them the same extension (or --format)")
    (face,) = faces_of([args.face], args)
    resp = client.edit(face, edits_of(args), keep=args.keep, format=fmt, return_original=bool(args.original),
                       skip_scores=args.skip_scores)
    files = [str(write(args.out, resp.image))]
    if args.original:
        files.append(str(write(args.original, resp.original)))
    if args.json:
        print_json({**message_dict(resp), "files": files})
        return exits.OK
    print(f"wrote {', '.join(files)}; latent_id {resp.latent_id} (edit it again: facedit edit id:{resp.latent_id} ...)")
    for q in resp.quality:
        print(f"  {q.direction_id}: strength {signed(q.strength)} (recommended {signed(q.strength_min)}.."
              f"{signed(q.strength_max)}), score {score(q.score_before)} -> {score(q.score_after)}")
    return exits.OK


def sweep(client: Client, args) -> int:
    out = Path(args.out)
    (face,) = faces_of([args.face], args)
    frames = client.sweep(face, args.target, args.start, args.stop, args.steps, keep=args.keep, method=args.method)
    suffix = out.suffix.lower()
    if suffix == ".gif":
        images.save_gif([f.image for f in frames], out, args.duration_ms, args.scale, args.boomerang)
        files = [str(out)]
    elif suffix in IMAGE_SUFFIXES:
        images.save_grid([f.image for f in frames], out, args.columns, args.scale)
        files = [str(out)]
    else:  # a folder of frames: the gateway's PNGs as they are, no Pillow needed
        files = [str(write(out / f"frame_{f.index:02d}_{f.strength:+.2f}.png", f.image)) for f in frames]
    summary = {"frames": len(frames), "strengths": [round(f.strength, 4) for f in frames],
               "latent_id": frames[0].latent_id if frames else "", "files": files}
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {out}{'/' if len(files) > 1 else ''}: {len(frames)} frames of {args.target} "
              f"{signed(args.start)}..{signed(args.stop)}; latent_id {summary['latent_id']}")
    return exits.OK


def encode(client: Client, args) -> int:
    resp = client.encode(Path(args.photo), return_reconstruction=bool(args.reconstruction),
                         fidelity=fidelity_of(args))
    files = [str(write(args.reconstruction, resp.reconstruction))] if args.reconstruction else []
    if args.json:
        print_json({**message_dict(resp), "files": files})
        return exits.OK
    print(f"latent_id {resp.latent_id} (cached {resp.expires_in_s} s after its last use)"
          + (f"; wrote {files[0]}" if files else ""))
    if resp.HasField("inversion"):
        print(f"  {inversion(message_dict(resp.inversion))}")
    return exits.OK


def generate(client: Client, args) -> int:
    resp = client.generate(args.seeds, format=args.format or "png")
    ext = "jpg" if (args.format or "png") == "jpeg" else "png"
    files = [str(write(Path(args.out) / f"seed_{s}.{ext}", img)) for s, img in zip(args.seeds, resp.images)]
    if args.json:
        print_json({**message_dict(resp), "files": files})
    else:
        print(f"wrote {len(files)} faces to {args.out}/: {', '.join(Path(f).name for f in files)}")
    return exits.OK


def create_direction(client: Client, args) -> int:
    positive, negative = image_files(args.positive), image_files(args.negative)
    resp = client.create_direction(args.name, positive, negative, attribute=args.attribute, method=args.method,
                                   replace=args.replace)
    d, pos, neg = resp.direction, resp.positive, resp.negative
    if args.json:
        print_json({**message_dict(resp), "positive_files": [str(p) for p in positive],
                    "negative_files": [str(n) for n in negative]})
        return exits.OK
    print(f"{d.id} in pack {d.pack.name} {d.pack.version} from {len(positive)} positive and {len(negative)} negative "
          f"photos: recommended {signed(d.strength_min)}..{signed(d.strength_max)}, limit {d.strength_limit:g}")
    print(f"  projections: positive {pos.mean:+.3f} ± {pos.std:.3f} (n={pos.count}), "
          f"negative {neg.mean:+.3f} ± {neg.std:.3f} (n={neg.count})")
    print(f"  use it: facedit edit seed:7 --edit {d.id}={d.strength_max:.2f} -o mine.png")
    return exits.OK


def istrc_face(client: Client, args) -> int:
    """blend and arithmetic: one ISTRC face written to -o, the inputs through the circle to --inputs."""
    fmt = out_format(args.out, args.format)
    if args.command == "blend":
        resp = client.blend(faces_of(args.faces, args), t=args.t, weights=args.weight,
                            return_inputs=bool(args.inputs), format=fmt)
    else:
        a, b, c = faces_of([args.a, args.b, args.c], args)
        resp = client.arithmetic(a, b, c, linear=args.linear, return_inputs=bool(args.inputs), format=fmt)
    files = [str(write(args.out, resp.image))]
    ext = "jpg" if fmt == "jpeg" else "png"
    files += [str(write(Path(args.inputs) / f"input_{i}.{ext}", img)) for i, img in enumerate(resp.inputs)]
    if args.json:
        print_json({**message_dict(resp), "files": files})
    else:
        print(f"wrote {files[0]}; latent_id {resp.latent_id}; angles to the inputs (radians) "
              f"{[round(a, 3) for a in resp.angles]}" + (f"; inputs in {args.inputs}/" if args.inputs else ""))
    return exits.OK


def show_config(settings, args) -> int:
    """The settings in use and where each came from (the token masked)."""
    shown = {name: getattr(settings, name) for name in settings.sources}
    if shown["token"]:
        shown["token"] = "***"
    if args.json:
        print_json({"settings": shown, "sources": settings.sources})
        return exits.OK
    table([[k, "" if v is None else str(v), settings.sources[k]] for k, v in shown.items()],
          ["SETTING", "VALUE", "FROM"], sys.stdout)
    return exits.OK
