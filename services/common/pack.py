"""Reading a pack from the model store (format: model_store/README.md).

Services read only manifest.json and the artefacts it lists, and check each
artefact's sha256 before use.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

FORMAT = "facedit-pack/1"


class PackError(RuntimeError):
    """The pack is missing, malformed or does not match its manifest."""


def default_store() -> Path:
    """FACEDIT_MODEL_STORE, or model_store/ of the current directory."""
    return Path(os.environ.get("FACEDIT_MODEL_STORE", "model_store"))


@dataclasses.dataclass(frozen=True)
class Pack:
    name: str
    version: str
    root: Path
    resolution: int
    latent_dim: int
    attributes: tuple[str, ...]
    default_method: str
    manifest: dict

    def artefact(self, name: str) -> Path:
        """Path of a listed artefact, after checking its sha256."""
        entry = self.manifest["artefacts"].get(name)
        if entry is None:
            raise PackError(f"pack {self.name!r} has no artefact {name!r} "
                            f"(it has: {sorted(self.manifest['artefacts'])})")
        path = self.root / entry["path"]
        if not path.exists():
            raise PackError(f"{path} is listed in the manifest but missing")
        digest = sha256(path)
        if digest != entry["sha256"]:
            raise PackError(f"{path}: sha256 {digest[:12]}... does not match the manifest "
                            f"({entry['sha256'][:12]}...); re-export the pack")
        return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_pack(name: str, store: Path | None = None) -> Pack:
    """Read <store>/<name>/manifest.json. Raises PackError with what to do."""
    store = store or default_store()
    if not name or "/" in name or name.startswith("."):
        raise PackError(f"invalid pack name {name!r}")
    path = store / name / "manifest.json"
    if not path.exists():
        available = sorted(p.parent.name for p in store.glob("*/manifest.json")) if store.exists() else []
        raise PackError(f"no pack {name!r} in {store} (available: {available})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise PackError(f"{path}: format {manifest.get('format')!r}, this build reads {FORMAT!r}")
    return Pack(name=manifest["pack"], version=manifest["version"], root=path.parent,
                resolution=int(manifest["resolution"]), latent_dim=int(manifest["latent_dim"]),
                attributes=tuple(manifest["attributes"]), default_method=manifest["default_method"],
                manifest=manifest)
