"""The build context of the pack image: one pack, the third-party files it references, MiniLM.

    python3 docker/pack_context.py --pack digiface64 --out out/images/pack-digiface64   (make images)
    python3 /ctx/pack_context.py --verify /packs                                          (inside the build)

Writes <out>/packs/<pack>/ (the whole pack folder), <out>/packs/third_party/ (each artefact the
manifest lists as ../third_party/..., plus MTCNN's mtcnn.json and the three networks it lists:
the encoder's face detection reads them from <model store>/third_party), <out>/packs/minilm/
(model.onnx + tokenizer.json of `make setup`: the directions service's phrase edits; left out with
a warning when missing, then text edits take single words only) and a copy of this script. Every
file is checked against its sha256 (manifest.json, mtcnn.json) when copied and again inside the
build (--verify), so an image never carries a pack the services would refuse. Standard library only.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

MINILM_FILES = ("model.onnx", "tokenizer.json")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def listed(store: Path, pack: str) -> list[tuple[Path, str]]:
    """(path relative to the store, sha256) of every file the pack's services read."""
    manifest = json.loads((store / pack / "manifest.json").read_text())
    files = []
    for entry in manifest["artefacts"].values():
        rel = Path(pack) / entry["path"]
        parts = []
        for part in rel.parts:  # normalise pack/../third_party/x without touching the disk
            if part == "..":
                parts.pop()
            else:
                parts.append(part)
        files.append((Path(*parts), entry["sha256"]))
    mtcnn = json.loads((store / "third_party" / "mtcnn.json").read_text())
    files += [(Path("third_party") / net["path"], net["sha256"]) for net in mtcnn["nets"].values()]
    return files


def check(store: Path, files: list[tuple[Path, str]]) -> None:
    bad = [f"{rel}: {'missing' if not (store / rel).is_file() else 'sha256 differs'}"
           for rel, digest in files if not (store / rel).is_file() or sha256(store / rel) != digest]
    if bad:
        raise SystemExit("pack files do not match their manifests (run make setup):\n  " + "\n  ".join(bad))


def prepare(store: Path, pack: str, minilm: Path, out: Path) -> None:
    files = listed(store, pack)
    check(store, files)
    packs = out / "packs"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(store / pack, packs / pack, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, _ in files:
        if rel.parts[0] == "third_party":
            (packs / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(store / rel, packs / rel)
    shutil.copy2(store / "third_party" / "mtcnn.json", packs / "third_party" / "mtcnn.json")
    if all((minilm / name).is_file() for name in MINILM_FILES):
        (packs / "minilm").mkdir()
        for name in MINILM_FILES:
            shutil.copy2(minilm / name, packs / "minilm" / name)
    else:
        print(f"warning: no MiniLM in {minilm} (make setup builds it): the pack image carries none, so the "
              "directions service takes single words only", file=sys.stderr)
    shutil.copy2(Path(__file__), out / "pack_context.py")
    size = sum(p.stat().st_size for p in packs.rglob("*") if p.is_file())
    print(f"{out}: pack {pack}, {len(files)} listed files checked, {size / 1e6:.0f} MB")


def verify(root: Path) -> None:
    """Check every pack under root (a folder holding <pack>/manifest.json and third_party/)."""
    packs = sorted(p.parent.name for p in root.glob("*/manifest.json"))
    if not packs:
        raise SystemExit(f"no pack under {root}")
    for pack in packs:
        files = listed(root, pack)
        check(root, files)
        print(f"{root / pack}: {len(files)} files match their sha256")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", default="digiface64")
    ap.add_argument("--model-store", type=Path, default=Path("model_store"))
    ap.add_argument("--minilm", type=Path, default=Path("build/minilm"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--verify", type=Path, metavar="ROOT", help="only check the packs under ROOT")
    args = ap.parse_args(argv)
    if args.verify:
        verify(args.verify)
    else:
        prepare(args.model_store, args.pack, args.minilm, args.out or Path("out/images") / f"pack-{args.pack}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
