"""The direction registry in Redis.

Schema (facedit_core.redis_keys builds every key):
  facedit:pack:<pack>:active                   string  active version
  facedit:pack:<pack>:<version>:meta           hash    latent_dim, default_method, attributes (JSON),
                                                       pose_attributes (JSON), loaded_at
  facedit:pack:<pack>:<version>:dir            hash    <direction id> -> JSON metadata
  facedit:pack:<pack>:<version>:vec            hash    <direction id> -> float32 little-endian bytes (dim,)
  facedit:pack:<pack>:stamp                    string  random token, replaced by every write (publish, put)

A pack version is written in one MULTI/EXEC transaction and then made active
(with a new stamp) in one more, so readers see either the old or the new
version, never a mix.

Every record has a `space` and a `dim`: "latent" directions (dim = latent_dim) move the
generator's latent and are what Compose adds up; ISTRC directions (`istrc/<attribute>`,
space "facenet", dim 512) are unit vectors on the sphere of FaceNet embeddings, which the
encoder's IstrcEdit walks along (facedit_core/istrc_directions.py). A pack whose
directions.json has no `istrc/` records but which carries ISTRC files gets them derived
at publish. Records written before these fields existed read as space "latent", dim 0
(= the pack's latent_dim).

Readers (`snapshot`) keep the active version's directions in process memory and
check them with one MGET of `active` and `stamp` per call: the hashes are read
again only when either changed. The stamp is a random token rather than a
counter, so a Redis that restarted empty and was published again cannot repeat
a stamp that a cache still holds.

Custom directions (`put`, from the gateway's CreateDirection): id
`custom/<name>`, method `custom`, written into the dir/vec hashes of the version
that is active when they are created - they are made with that version's
encoder, so they belong to it. Re-publishing the same version (a restart of the
directions service) keeps them; switching to another version hides them (the
new version's hashes do not have them) and switching back shows them again, as
old versions stay in Redis. At most MAX_CUSTOM_PER_VERSION per pack version.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid

import numpy as np
import redis

from facedit_core.errors import FaceditError, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from facedit_core.pack import Pack, read_directions
from facedit_core.records import CUSTOM_PREFIX, MAX_CUSTOM_PER_VERSION, UNIT_TOLERANCE, DirectionRecord
from facedit_core.redis_keys import pack_key as _key
from services.common.redis_server import read_state

PUT_ATTEMPTS = 20


@dataclasses.dataclass(frozen=True)
class PackInfo:
    name: str
    version: str
    latent_dim: int
    default_method: str
    attributes: tuple[str, ...]
    pose_attributes: tuple[str, ...] = ()  # the manifest's alignment.pose_attributes: they turn or tilt the head


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Every direction of a pack's active version as read at one stamp; never modified.

    vectors: id -> (record.dim,) float32, read-only (latent_dim for latent directions)."""
    info: PackInfo
    stamp: str
    records: dict[str, DirectionRecord]
    vectors: dict[str, np.ndarray]

    def get(self, ids: list[str]) -> list[tuple[DirectionRecord, np.ndarray]]:
        """Records and vectors for `ids`; NotFound names unknown ids."""
        missing = [i for i in ids if i not in self.records]
        if missing:
            raise NotFound(f"no direction {missing} in pack {self.info.name} {self.info.version}")
        return [(self.records[i], self.vectors[i]) for i in ids]


class Registry:
    """Reads and writes the schema above; thread-safe (one instance serves every RPC thread)."""

    def __init__(self, client: redis.Redis):
        self.r = client
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = threading.Lock()

    # -- writing -------------------------------------------------------------
    def publish(self, pack: Pack) -> int:
        """Write the pack's directions (facedit_core.pack.read_directions) under its version and make it active.
        Returns the count."""
        directions = read_directions(pack)
        v = pack.version
        # re-publishing a version replaces its pack directions but keeps its custom ones
        ids = {rec.id for rec, _ in directions}
        stale = [i for i in self.r.hkeys(_key(pack.name, v, "dir"))
                 if not i.decode().startswith(CUSTOM_PREFIX) and i.decode() not in ids]
        pipe = self.r.pipeline(transaction=True)
        if stale:
            pipe.hdel(_key(pack.name, v, "dir"), *stale)
            pipe.hdel(_key(pack.name, v, "vec"), *stale)
        pipe.hset(_key(pack.name, v, "meta"), mapping={
            "latent_dim": pack.latent_dim, "default_method": pack.default_method,
            "attributes": json.dumps(list(pack.attributes)),
            "pose_attributes": json.dumps(pack.manifest.get("alignment", {}).get("pose_attributes", [])),
            "loaded_at": time.time()})
        for record, vector in directions:
            pipe.hset(_key(pack.name, v, "dir"), record.id, record.to_json())
            pipe.hset(_key(pack.name, v, "vec"), record.id, np.ascontiguousarray(vector, "<f4").tobytes())
        pipe.execute()
        activate = self.r.pipeline(transaction=True)
        activate.set(_key(pack.name, "active"), v)
        activate.set(_key(pack.name, "stamp"), _new_stamp())
        activate.execute()
        return len(directions)

    def put(self, info: PackInfo, record: DirectionRecord, vector: np.ndarray, replace: bool = False) -> np.ndarray:
        """Write one direction into `info`'s version (the active one when `info` was read).

        The vector must be finite, of length record.dim (0: latent_dim) and non-zero; it is stored
        normalised (returned). An existing id is overwritten only with `replace`.
        Custom directions are limited to MAX_CUSTOM_PER_VERSION per version
        (ResourceExhausted). Check and write are one optimistic transaction
        (WATCH on the version's directions and the active key), so concurrent puts
        cannot exceed the limit or overwrite each other silently, and a put that
        races a version switch fails instead of landing in the old version.
        """
        unit = self._unit(vector, record.dim or info.latent_dim, record.id)
        record.check()
        dir_key, vec_key, active_key = (_key(info.name, info.version, "dir"), _key(info.name, info.version, "vec"),
                                        _key(info.name, "active"))
        with self.r.pipeline(transaction=True) as pipe:
            for _ in range(PUT_ATTEMPTS):
                try:
                    pipe.watch(dir_key, active_key)
                    active = pipe.get(active_key)
                    if active is None or active.decode() != info.version:
                        raise FailedPrecondition(f"pack {info.name} switched from version {info.version} to "
                                                 f"{active.decode() if active else 'none'} meanwhile; retry")
                    if pipe.hexists(dir_key, record.id) and not replace:
                        raise InvalidArgument(f"direction {record.id} already exists in pack {info.name} "
                                              f"{info.version}; choose another name or set replace")
                    if record.id.startswith(CUSTOM_PREFIX) and not pipe.hexists(dir_key, record.id):
                        count = sum(1 for k in pipe.hkeys(dir_key) if k.decode().startswith(CUSTOM_PREFIX))
                        if count >= MAX_CUSTOM_PER_VERSION:
                            raise ResourceExhausted(f"pack {info.name} {info.version} already has {count} custom "
                                                    f"directions (the limit); replace an existing one")
                    pipe.multi()
                    pipe.hset(dir_key, record.id, record.to_json())
                    pipe.hset(vec_key, record.id, unit.astype("<f4").tobytes())
                    pipe.set(_key(info.name, "stamp"), _new_stamp())
                    pipe.execute()
                    return unit
                except redis.WatchError:  # another writer touched the version meanwhile: check again
                    continue
        raise FaceditError(f"{record.id}: the registry kept changing under {PUT_ATTEMPTS} attempts; retry",
                           "ABORTED")

    @staticmethod
    def _unit(vector: np.ndarray, dim: int, what: str) -> np.ndarray:
        v = np.asarray(vector, dtype=np.float64)
        if v.shape != (dim,):
            raise InvalidArgument(f"{what}: vector of shape {list(v.shape)}, expected ({dim},)")
        if not np.isfinite(v).all():
            raise InvalidArgument(f"{what}: vector contains NaN or infinity")
        norm = float(np.linalg.norm(v))
        unit = (v / norm).astype(np.float32) if norm > 0 else v.astype(np.float32)
        if not (np.isfinite(unit).all() and abs(float(np.linalg.norm(unit)) - 1.0) <= UNIT_TOLERANCE):
            raise InvalidArgument(f"{what}: vector of norm {norm:.3g} cannot be normalised to unit length")
        return unit

    # -- reading -------------------------------------------------------------
    def snapshot(self, pack: str) -> Snapshot:
        """The active version's directions: one Redis round trip (MGET active, stamp) when the
        cached snapshot is current, else a consistent re-read of the version (one MULTI/EXEC)."""
        version, stamp = read_state(self.r, pack)
        if version is None:
            raise InvalidArgument(f"unknown pack {pack!r}: no directions published for it")
        with self._lock:
            cached = self._snapshots.get(pack)
        if cached is not None and cached.info.version == version and cached.stamp == stamp:
            return cached
        fresh = self._read_snapshot(pack, version)
        with self._lock:
            self._snapshots[pack] = fresh
        return fresh

    def _read_snapshot(self, pack: str, version: str, attempts: int = 5) -> Snapshot:
        """Meta, records and vectors of `version` with the stamp and active version of the same
        instant (a transaction); read again if `version` stopped being the active one meanwhile."""
        for _ in range(attempts):
            pipe = self.r.pipeline(transaction=True)
            pipe.get(_key(pack, "active"))
            pipe.get(_key(pack, "stamp"))
            for part in ("meta", "dir", "vec"):
                pipe.hgetall(_key(pack, version, part))
            active, stamp, meta, dirs, vecs = pipe.execute()
            if active is None:
                raise InvalidArgument(f"unknown pack {pack!r}: no directions published for it")
            if active.decode() == version:
                info = self._info_from_meta(pack, version, meta)
                records = {k.decode(): DirectionRecord.from_json(v) for k, v in dirs.items()}
                vectors = {}
                for k in records:
                    vec = np.frombuffer(vecs[k.encode()], dtype="<f4").astype(np.float32)
                    vec.flags.writeable = False
                    vectors[k] = vec
                return Snapshot(info, _text(stamp), records, vectors)
            version = active.decode()
        raise FaceditError(f"pack {pack}: the active version kept changing while being read; retry",
                           "ABORTED")

    def pack_info(self, pack: str) -> PackInfo:
        version = self.r.get(_key(pack, "active"))
        if version is None:
            raise InvalidArgument(f"unknown pack {pack!r}: no directions published for it")
        version = version.decode()
        return self._info_from_meta(pack, version, self.r.hgetall(_key(pack, version, "meta")))

    @staticmethod
    def _info_from_meta(pack: str, version: str, meta: dict) -> PackInfo:
        if not meta:
            raise FailedPrecondition(f"pack {pack!r} version {version} is active but has no metadata; "
                                     f"re-run LoadPack")
        return PackInfo(name=pack, version=version, latent_dim=int(meta[b"latent_dim"]),
                        default_method=meta[b"default_method"].decode(),
                        attributes=tuple(json.loads(meta[b"attributes"])),
                        pose_attributes=tuple(json.loads(meta.get(b"pose_attributes", b"[]"))))

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


def _new_stamp() -> str:
    return uuid.uuid4().hex


def _text(raw: bytes | None) -> str:
    return raw.decode() if raw is not None else ""

