"""The pack format and its reader (the format is described in docs/training.md).

A pack is a folder model_store/<pack>/ with manifest.json: format, pack name, version,
resolution, latent_dim, attributes, default_method and every artefact with its path (relative
to the folder) and sha256. Services read only manifest.json and the artefacts it lists, and
check each artefact's sha256 before use; training writes packs in this format.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from facedit_core import istrc_directions
from facedit_core.errors import FailedPrecondition, InvalidArgument
from facedit_core.records import ISTRC_PREFIX, LATENT_SPACE, DirectionRecord

FORMAT = "facedit-pack/1"
MANIFEST = "manifest.json"
# artefact name in manifest["artefacts"] -> what it holds
ARTEFACTS = {
    "generator": "ONNX: z (N, latent_dim) float32 -> pixels (N, R, R, 3) uint8",
    "encoder": "ONNX: pixels (N, R, R, 3) uint8 -> z (N, latent_dim) float32 (CRG encoder)",
    "classifier": "ONNX: pixels (N, R, R, 3) uint8 -> attribute logits (N, A) float32",
    "directions": "JSON: one direction record per row of direction_vectors (records.DirectionRecord + row)",
    "direction_vectors": "npy: (K, latent_dim) float32 unit rows",
    "words_mapper": "ONNX: GloVe vectors (N, 50) float32 -> latent directions (N, latent_dim)",
    "words_vocab": "JSON: the words and concepts the words method knows",
    "words_glove": "npy: (V, 50) float16 GloVe vectors of words_vocab's words (built by make setup: ../third_party/)",
    "words_concepts": "npy: (C, 384) float32 sentence-encoder vectors of the concepts",
    "facenet": "ONNX: FaceNet, face (N, 160, 160, 3) -> unit embedding (N, 512)",
    "istrc_mapping": "ONNX: FaceNet embedding (N, 512) -> z (N, latent_dim) (ISTRC MLP)",
    "istrc_classifiers": "npy: (A, 512) float32 attribute classifier weights on embeddings",
    "istrc": "JSON: ISTRC attributes, biases, step, strength range and metrics",
}


class PackError(FailedPrecondition):
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


    def verify(self, names: tuple[str, ...] | None = None) -> None:
        """Check that the listed artefacts among `names` (default: every artefact of the manifest) exist
        and match their sha256; PackError naming every one that does not."""
        listed = self.manifest["artefacts"]
        problems = []
        for name in (listed if names is None else [n for n in names if n in listed]):
            try:
                self.artefact(name)
            except PackError as err:
                problems.append(f"{name}: {err}")
        if problems:
            raise PackError(f"pack {self.name!r} {self.version}: " + "; ".join(problems))


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
    path = store / name / MANIFEST
    if not path.exists():
        available = sorted(p.parent.name for p in store.glob(f"*/{MANIFEST}")) if store.exists() else []
        raise PackError(f"no pack {name!r} in {store} (available: {available})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise PackError(f"{path}: format {manifest.get('format')!r}, this build reads {FORMAT!r}")
    return Pack(name=manifest["pack"], version=manifest["version"], root=path.parent,
                resolution=int(manifest["resolution"]), latent_dim=int(manifest["latent_dim"]),
                attributes=tuple(manifest["attributes"]), default_method=manifest["default_method"],
                manifest=manifest)


def load_verified(names: list[str], store: Path, artefacts: tuple[str, ...] | None = None) -> list[Pack]:
    """load_pack of each name, each checked with Pack.verify(artefacts) (default: every artefact);
    PackError names what is missing or wrong."""
    packs = [load_pack(name, store) for name in names]
    for pack in packs:
        pack.verify(artefacts)
    return packs


def read_directions(pack: Pack) -> list[tuple[DirectionRecord, np.ndarray]]:
    """The pack's directions: directions.json with the rows of directions.npy ((dim,) float32
    little-endian, latent space), then the ISTRC directions derived from its ISTRC files unless
    directions.json has them. Raises PackError when the files disagree."""
    raw = json.loads(pack.artefact("directions").read_text())
    vectors = np.load(pack.artefact("direction_vectors"), allow_pickle=False).astype("<f4")
    if vectors.ndim != 2 or vectors.shape[1] != pack.latent_dim:
        raise PackError(f"{pack.name}: directions.npy has shape {vectors.shape}, expected (K, {pack.latent_dim})")
    out = [(DirectionRecord.from_dict({**rec, "space": LATENT_SPACE, "dim": pack.latent_dim}), vectors[rec["row"]])
           for rec in raw]
    if not any(r.id.startswith(ISTRC_PREFIX) for r, _ in out):
        try:
            derived = istrc_directions.records(pack)
        except (ValueError, KeyError) as err:
            raise PackError(f"{pack.name}: cannot read its ISTRC directions: {err}")
        out += [(DirectionRecord.from_dict(rec), vec.astype("<f4")) for rec, vec in derived]
    for record, _ in out:
        try:
            record.check()
        except InvalidArgument as err:
            raise PackError(f"{pack.name}: {err}") from None
    return out
