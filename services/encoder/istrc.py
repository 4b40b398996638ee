"""ISTRC models of one pack, as the encoder service runs them (no torch).

- facenet.onnx (the pack lists `../third_party/facenet.onnx`): pixels (N, 160, 160, 3) uint8
  -> (N, 512) unit embeddings, behind a dynamic batcher like the encoder's other models. Faces
  are first brought to the pack's resolution (as training saw them: generated faces), then
  upsampled to 160 px with `images.resize` - the same function training used.
- istrc_mapping.onnx: embeddings (N, 512) float32 -> z (N, latent_dim).
- istrc_classifiers.npy (A, 512) + istrc.json biases: logistic classifiers; the gradient of a
  logit w . e + b is the constant w, so an edit is `sphere.walk` along the unit w / |w| with
  numpy only. The directions walked come with the request (the registry's `istrc/<attribute>`
  records, resolved by the directions service) or, when a request brings none, from the pack's
  files by attribute - the same records (facedit_core/istrc_directions.py).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np

from facedit.v1 import common_pb2
from facedit_core import images, istrc_directions, sphere
from facedit_core.errors import InvalidArgument
from facedit_core.pack import Pack
from facedit_core.records import FACENET_SPACE, MAX_EDITS, MAX_KEEP
from services.common import deadlines, onnx
from services.common.batcher import DynamicBatcher
from services.common.tensors import from_tensor

ARTEFACTS = ("facenet", "istrc_mapping", "istrc_classifiers", "istrc")


def require(pack: Pack, models: "IstrcModels | None") -> "IstrcModels":
    """The pack's ISTRC models, or INVALID_ARGUMENT naming the methods the pack has."""
    if models is None:
        raise InvalidArgument(f"pack {pack.name} has no ISTRC models (its methods: "
                              f"{', '.join(pack.manifest.get('methods', [])) or 'none listed'}); "
                              f"use another method or a pack with istrc")
    return models


@dataclasses.dataclass(frozen=True)
class Target:
    """One direction to walk on the sphere: a registry direction (facedit_core/istrc_directions.py).

    vector: (E,) float64 unit; metrics: weight_norm and bias give the classifier logit; limit:
    hard limit on |strength| (radians); strength_min/max: the recommended range."""
    id: str
    attribute: str
    vector: np.ndarray
    metrics: dict
    limit: float
    strength_min: float
    strength_max: float

    @classmethod
    def from_record(cls, record: dict, vector: np.ndarray) -> "Target":
        return cls(id=record["id"], attribute=record["attribute"], vector=np.asarray(vector, np.float64),
                   metrics=dict(record["metrics"]), limit=float(record["strength_limit"]),
                   strength_min=float(record["strength_min"]), strength_max=float(record["strength_max"]))

    @classmethod
    def from_message(cls, d: common_pb2.Direction, dim: int, what: str) -> "Target":
        """A Direction message with its vector (from the directions service) -> Target; INVALID_ARGUMENT
        when it is not an embedding-space direction of length `dim` with a sane limit."""
        if d.space != FACENET_SPACE:
            raise InvalidArgument(f"{what} {d.id!r}: space {d.space or 'unset'!r}; ISTRC walks directions of "
                                  f"space {FACENET_SPACE!r} (the FaceNet embedding), not latent ones")
        if not d.HasField("vector"):
            raise InvalidArgument(f"{what} {d.id!r}: no vector given")
        v = from_tensor(d.vector, f"{what} {d.id} vector").astype(np.float64)
        if v.shape != (dim,) or not np.isfinite(v).all() or np.linalg.norm(v) < 1e-6:
            raise InvalidArgument(f"{what} {d.id!r}: the vector must be {dim} finite numbers, not all zero; "
                                  f"got shape {list(v.shape)}")
        if not (np.isfinite(d.strength_limit) and d.strength_limit > 0):
            raise InvalidArgument(f"{what} {d.id!r}: strength_limit must be > 0, got {d.strength_limit}")
        return cls(id=d.id, attribute=d.attribute, vector=v / np.linalg.norm(v), metrics=dict(d.metrics),
                   limit=float(d.strength_limit), strength_min=float(d.strength_min),
                   strength_max=float(d.strength_max))

    def logit(self, e: np.ndarray) -> float:
        return istrc_directions.logit(self.vector, self.metrics, e)


class IstrcModels:
    def __init__(self, pack: Pack, threading: onnx.Threading, max_batch: int, max_delay_s: float, max_queue: int):
        self.pack = pack
        meta = json.loads(pack.artefact("istrc").read_text())
        self.step = float(meta["step"])
        self.size, self.dim = int(meta["facenet_input"]), int(meta["embedding_dim"])
        # the pack's own directions by attribute: used when a request brings none
        self.targets = {rec["attribute"]: Target.from_record(rec, vec) for rec, vec in istrc_directions.records(pack)}
        self.attributes: list[str] = list(self.targets)
        facenet = onnx.session(pack.artefact("facenet"), threading)
        self.mapping = onnx.session(pack.artefact("istrc_mapping"), threading)
        self.facenet = DynamicBatcher(lambda px: facenet.run(None, {"pixels": px})[0], max_batch, max_delay_s,
                                      max_queue, name=f"facenet-{pack.name}")

    def embed(self, pixels: np.ndarray, timeout_s: float = deadlines.DEFAULT_DEADLINE_S) -> np.ndarray:
        """(N, R, R, 3) uint8 at the pack resolution -> (N, 512) float32 unit embeddings."""
        big = np.stack([images.resize(p, self.size) for p in pixels])
        return self.facenet.call(big, timeout_s)[0]

    def embed_faces(self, faces: np.ndarray, timeout_s: float = deadlines.DEFAULT_DEADLINE_S) -> np.ndarray:
        """(N, S, S, 3) uint8 faces aligned at FaceNet's own resolution S (160; from a photo, not brought to
        the pack's resolution first) -> (N, 512) float32 unit embeddings: the identity of real faces."""
        if faces.shape[1:] != (self.size, self.size, 3):
            raise ValueError(f"FaceNet takes (N, {self.size}, {self.size}, 3) faces, got {faces.shape}")
        return self.facenet.call(np.ascontiguousarray(faces), timeout_s)[0]

    def to_latents(self, embeddings: np.ndarray) -> np.ndarray:
        """(N, 512) unit float32 -> z (N, latent_dim) float32."""
        return self.mapping.run(None, {"embedding": np.ascontiguousarray(embeddings, np.float32)})[0]

    def check_embeddings(self, e: np.ndarray, what: str = "embeddings") -> np.ndarray:
        """(N, 512) or (512,) float32, finite, non-zero -> (N, 512) float32 unit rows."""
        if e.dtype != np.float32:
            raise InvalidArgument(f"{what}: must be float32, got {e.dtype}")
        e = e[None] if e.ndim == 1 else e
        if e.ndim != 2 or e.shape[1] != self.dim or not 1 <= len(e) <= 64:
            raise InvalidArgument(f"{what}: expected 1..64 rows of length {self.dim}, got shape {list(e.shape)}")
        if not np.isfinite(e).all():
            raise InvalidArgument(f"{what}: contains NaN or infinity")
        norms = np.linalg.norm(e, axis=1, keepdims=True)
        if (norms < 1e-6).any():
            raise InvalidArgument(f"{what}: a zero vector has no direction on the sphere")
        return (e / norms).astype(np.float32)

    def target(self, attribute: str, what: str) -> Target:
        """The pack's own direction of `attribute`, or INVALID_ARGUMENT naming those it has."""
        if attribute not in self.targets:
            raise InvalidArgument(f"{what}: unknown attribute {attribute!r}; pack {self.pack.name} has ISTRC "
                                  f"classifiers for {', '.join(self.attributes)}")
        return self.targets[attribute]

    def edit(self, e: np.ndarray, edits: list[tuple[Target, float]],
             keep: list[Target]) -> tuple[np.ndarray, list[dict]]:
        """One unit embedding (512,), edits [(direction, strength radians)] applied in order, kept
        directions -> (edited embedding (512,) float32, one detail dict per edit)."""
        if not 1 <= len(edits) <= MAX_EDITS or len(keep) > MAX_KEEP:
            raise InvalidArgument(f"give 1 to {MAX_EDITS} edits and at most {MAX_KEEP} kept attributes")
        clash = sorted({t.attribute for t, _ in edits} & {k.attribute for k in keep})
        if clash:
            raise InvalidArgument(f"cannot both edit and keep {clash}")
        kept = np.stack([k.vector for k in keep]) if keep else None
        x, details = np.asarray(e, np.float64), []
        for t, s in edits:
            if not np.isfinite(s) or abs(s) > t.limit:
                raise InvalidArgument(f"strength {s} for {t.id} is outside the allowed range "
                                      f"[-{t.limit:g}, {t.limit:g}] radians (recommended "
                                      f"{t.strength_min:g}..{t.strength_max:g})")
            x_new, info = sphere.walk(x, lambda _, v=t.vector: v, s, self.step, kept)
            details.append({"attribute": t.attribute, "direction_id": t.id, "strength": s, "steps": info["steps"],
                            "arc": sphere.angle(x, x_new), "logit_before": t.logit(x),
                            "logit_after": t.logit(x_new), "stopped_early": info["stopped_early"],
                            "strength_min": t.strength_min, "strength_max": t.strength_max})
            x = x_new
        return x.astype(np.float32), details

    def close(self) -> None:
        self.facenet.close()
