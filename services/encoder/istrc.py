"""ISTRC models of one pack, as the encoder service runs them (no torch).

- facenet.onnx (the pack lists `../third_party/facenet.onnx`): pixels (N, 160, 160, 3) uint8
  -> (N, 512) unit embeddings, behind a dynamic batcher like the encoder's other models. Faces
  are first brought to the pack's resolution (as training saw them: generated faces), then
  upsampled to 160 px with `images.resize` - the same function training used.
- istrc_mapping.onnx: embeddings (N, 512) float32 -> z (N, latent_dim).
- istrc_classifiers.npy (A, 512) + istrc.json biases: logistic classifiers; the gradient of a
  logit w . e + b is the constant w, so an edit is `sphere.walk` with numpy only.
"""
from __future__ import annotations

import json

import numpy as np

from services.common import images, onnx, sphere
from services.common.batcher import DynamicBatcher
from services.common.errors import InvalidArgument
from services.common.pack import Pack

ARTEFACTS = ("facenet", "istrc_mapping", "istrc_classifiers", "istrc")
MAX_EDITS = 16
MAX_KEEP = 16


def require(pack: Pack, models: "IstrcModels | None") -> "IstrcModels":
    """The pack's ISTRC models, or INVALID_ARGUMENT naming the methods the pack has."""
    if models is None:
        raise InvalidArgument(f"pack {pack.name} has no ISTRC models (its methods: "
                              f"{', '.join(pack.manifest.get('methods', [])) or 'none listed'}); "
                              f"use another method or a pack with istrc")
    return models


class IstrcModels:
    def __init__(self, pack: Pack, threading: onnx.Threading, max_batch: int, max_delay_s: float, max_queue: int):
        self.pack = pack
        meta = json.loads(pack.artefact("istrc").read_text())
        self.attributes: list[str] = list(meta["attributes"])
        self.biases = np.asarray(meta["biases"], np.float64)
        self.weights = np.load(pack.artefact("istrc_classifiers"), allow_pickle=False).astype(np.float64)
        self.step, self.limit = float(meta["step"]), float(meta["strength_limit"])
        self.strength_range = (float(meta["strength_min"]), float(meta["strength_max"]))
        self.size, self.dim = int(meta["facenet_input"]), int(meta["embedding_dim"])
        if self.weights.shape != (len(self.attributes), self.dim):
            raise ValueError(f"{pack.name}: istrc_classifiers.npy {self.weights.shape} does not match istrc.json")
        facenet = onnx.session(pack.artefact("facenet"), threading)
        self.mapping = onnx.session(pack.artefact("istrc_mapping"), threading)
        self.facenet = DynamicBatcher(lambda px: facenet.run(None, {"pixels": px})[0], max_batch, max_delay_s,
                                      max_queue, name=f"facenet-{pack.name}")

    def embed(self, pixels: np.ndarray, timeout_s: float | None = None) -> np.ndarray:
        """(N, R, R, 3) uint8 at the pack resolution -> (N, 512) float32 unit embeddings."""
        big = np.stack([images.resize(p, self.size) for p in pixels])
        return self.facenet.submit(big).result(timeout=timeout_s)[0]

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

    def _index(self, attribute: str, what: str) -> int:
        if attribute not in self.attributes:
            raise InvalidArgument(f"{what}: unknown attribute {attribute!r}; pack {self.pack.name} has ISTRC "
                                  f"classifiers for {', '.join(self.attributes)}")
        return self.attributes.index(attribute)

    def edit(self, e: np.ndarray, edits: list[tuple[str, float]], keep: list[str]) -> tuple[np.ndarray, list[dict]]:
        """One unit embedding (512,), edits [(attribute, strength radians)], kept attributes ->
        (edited embedding (512,) float32, one detail dict per edit)."""
        if not 1 <= len(edits) <= MAX_EDITS or len(keep) > MAX_KEEP:
            raise InvalidArgument(f"give 1 to {MAX_EDITS} edits and at most {MAX_KEEP} kept attributes")
        idx = [self._index(a, "edit") for a, _ in edits]
        kept = [self._index(a, "keep") for a in keep]
        clash = sorted({self.attributes[i] for i in idx} & {self.attributes[k] for k in kept})
        if clash:
            raise InvalidArgument(f"cannot both edit and keep {clash}")
        x, details = np.asarray(e, np.float64), []
        for i, (a, s) in zip(idx, edits):
            if not np.isfinite(s) or abs(s) > self.limit:
                raise InvalidArgument(f"strength {s} for istrc/{a} is outside the allowed range "
                                      f"[-{self.limit:g}, {self.limit:g}] radians (recommended "
                                      f"{self.strength_range[0]:g}..{self.strength_range[1]:g})")
            before = float(x @ self.weights[i] + self.biases[i])
            x_new, info = sphere.walk(x, lambda _, w=self.weights[i]: w, s, self.step,
                                      self.weights[kept] if kept else None)
            details.append({"attribute": a, "strength": s, "steps": info["steps"],
                            "arc": sphere.angle(x, x_new), "logit_before": before,
                            "logit_after": float(x_new @ self.weights[i] + self.biases[i]),
                            "stopped_early": info["stopped_early"]})
            x = x_new
        return x.astype(np.float32), details

    def close(self) -> None:
        self.facenet.close()
