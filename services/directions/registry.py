"""The direction registry in Redis.

Schema (documented in model_store/README.md, shared with training's publisher):
  facedit:pack:<pack>:active                   string  active version
  facedit:pack:<pack>:<version>:meta           hash    latent_dim, default_method, attributes (JSON), loaded_at
  facedit:pack:<pack>:<version>:dir            hash    <direction id> -> JSON metadata
  facedit:pack:<pack>:<version>:vec            hash    <direction id> -> float32 little-endian bytes (latent_dim,)

A pack version is written in one MULTI/EXEC transaction and then made active
with one SET, so readers see either the old or the new version, never a mix.
"""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import redis

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.pack import Pack

PREFIX = "facedit:pack"


def _key(pack: str, *parts: str) -> str:
    return ":".join([PREFIX, pack, *parts])


@dataclasses.dataclass(frozen=True)
class DirectionRecord:
    id: str
    attribute: str
    method: str
    strength_min: float
    strength_max: float
    strength_limit: float
    strength_meaning: str
    metrics: dict
    provenance: dict

    @classmethod
    def from_json(cls, raw: bytes | str) -> "DirectionRecord":
        data = json.loads(raw)
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class PackInfo:
    name: str
    version: str
    latent_dim: int
    default_method: str
    attributes: tuple[str, ...]


class Registry:
    def __init__(self, client: redis.Redis):
        self.r = client

    # -- writing -------------------------------------------------------------
    def publish(self, pack: Pack) -> int:
        """Write the pack's directions under its version and make it active. Returns the count."""
        records = json.loads(pack.artefact("directions").read_text())
        vectors = np.load(pack.artefact("direction_vectors"), allow_pickle=False).astype("<f4")
        if vectors.ndim != 2 or vectors.shape[1] != pack.latent_dim:
            raise FailedPrecondition(f"{pack.name}: directions.npy has shape {vectors.shape}, "
                                     f"expected (K, {pack.latent_dim})")
        v = pack.version
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(_key(pack.name, v, "dir"), _key(pack.name, v, "vec"))
        pipe.hset(_key(pack.name, v, "meta"), mapping={
            "latent_dim": pack.latent_dim, "default_method": pack.default_method,
            "attributes": json.dumps(list(pack.attributes)), "loaded_at": time.time()})
        for rec in records:
            record = DirectionRecord(**{f.name: rec[f.name] for f in dataclasses.fields(DirectionRecord)})
            pipe.hset(_key(pack.name, v, "dir"), record.id, record.to_json())
            pipe.hset(_key(pack.name, v, "vec"), record.id, vectors[rec["row"]].tobytes())
        pipe.execute()
        self.r.set(_key(pack.name, "active"), v)
        return len(records)

    # -- reading -------------------------------------------------------------
    def pack_info(self, pack: str) -> PackInfo:
        version = self.r.get(_key(pack, "active"))
        if version is None:
            raise InvalidArgument(f"unknown pack {pack!r}: no directions published for it")
        version = version.decode()
        meta = self.r.hgetall(_key(pack, version, "meta"))
        if not meta:
            raise FailedPrecondition(f"pack {pack!r} version {version} is active but has no metadata; "
                                     f"re-run LoadPack")
        return PackInfo(name=pack, version=version, latent_dim=int(meta[b"latent_dim"]),
                        default_method=meta[b"default_method"].decode(),
                        attributes=tuple(json.loads(meta[b"attributes"])))

    def list(self, info: PackInfo) -> list[DirectionRecord]:
        raw = self.r.hgetall(_key(info.name, info.version, "dir"))
        return sorted((DirectionRecord.from_json(v) for v in raw.values()), key=lambda d: d.id)

    def get(self, info: PackInfo, ids: list[str]) -> list[tuple[DirectionRecord, np.ndarray]]:
        """Records and (D,) float32 vectors for `ids`; InvalidArgument names unknown ids."""
        if not ids:
            return []
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(_key(info.name, info.version, "dir"), ids)
        pipe.hmget(_key(info.name, info.version, "vec"), ids)
        metas, vecs = pipe.execute()
        missing = [i for i, m in zip(ids, metas) if m is None]
        if missing:
            raise NotFound(f"no direction {missing} in pack {info.name} {info.version}")
        return [(DirectionRecord.from_json(m), np.frombuffer(v, dtype="<f4").copy()) for m, v in zip(metas, vecs)]

    def ids(self, info: PackInfo) -> set[str]:
        return {k.decode() for k in self.r.hkeys(_key(info.name, info.version, "dir"))}
