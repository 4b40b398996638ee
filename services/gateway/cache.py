"""The gateway's caches in Redis: a client sends a photo once, then edits by id.

Latents: key facedit:latent:<id> (hash: pack, data = float32 little-endian bytes; grey; for a face of a
faithful inversion, mod = its generator modulation, float32 little-endian; for a face found in a photo,
the photo's id and where the face is in it) with a TTL that each use renews.

Photos: the file of every photo a cached face came from, facedit:photo:<id> (id: its sha256, so the
same photo is kept once), with the same TTL, renewed whenever it is used. Their total size is bounded
(max_bytes, --photo-cache-mb): each new photo evicts the least recently used ones beyond it (index:
facedit:photos, last use per id; sizes: facedit:photo_sizes). A latent whose photo was evicted or
expired still edits, without the photo (EditResponse.photo_forgotten).

Lookups by id count as hits or misses in facedit_cache_lookups_total{cache="latent"|"photo"}
(services/common/metrics.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import secrets
import time

import numpy as np
import redis

from facedit_core.errors import InvalidArgument, NotFound
from facedit_core.redis_keys import PHOTO_INDEX, PHOTO_SIZES, latent_key, photo_key
from services.common.metrics import cache_counters

DEFAULT_PHOTO_CACHE_MB = 256


@dataclasses.dataclass(frozen=True)
class PhotoPlace:
    """Where a face is in its photo (photo pixels after EXIF orientation)."""
    affine: np.ndarray     # (2, 3) photo -> aligned crop
    landmarks: np.ndarray  # (5, 2) as detected
    box: np.ndarray        # (4,) x0, y0, x1, y1, clipped to the photo
    score: float           # the detector's probability

    @classmethod
    def from_detected(cls, face) -> "PhotoPlace":
        """An encoder DetectedFace -> PhotoPlace."""
        return cls(affine=np.asarray(face.affine, np.float64).reshape(2, 3),
                   landmarks=np.asarray(face.landmarks, np.float64).reshape(5, 2),
                   box=np.asarray(face.box, np.float64), score=float(face.score))

    def to_bytes(self) -> bytes:
        values = [self.affine.ravel(), self.landmarks.ravel(), self.box, [self.score]]
        return np.concatenate(values).astype("<f8").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "PhotoPlace":
        v = np.frombuffer(data, dtype="<f8")
        return cls(affine=v[:6].reshape(2, 3).copy(), landmarks=v[6:16].reshape(5, 2).copy(), box=v[16:20].copy(),
                   score=float(v[20]))


@dataclasses.dataclass(frozen=True)
class CachedFace:
    """A cached latent and what it came from."""
    z: np.ndarray
    grey: bool = False               # its source image was greyscale
    photo_id: str | None = None      # the photo it was found in (PhotoCache), if any
    place: PhotoPlace | None = None  # where in that photo
    modulation: np.ndarray | None = None  # (M,) float32: the generator modulation of a faithful inversion


class LatentCache:
    def __init__(self, client: redis.Redis, ttl_s: int):
        self.r, self.ttl_s = client, ttl_s
        self._hit, self._miss = cache_counters("latent")

    def put(self, pack: str, z: np.ndarray, grey: bool = False, photo_id: str | None = None,
            place: PhotoPlace | None = None, modulation: np.ndarray | None = None) -> str:
        """Cache z (D,) (and, for a face of a photo, the photo's id and the face's place in it; for a faithful
        inversion, its modulation (M,)); returns its id."""
        latent_id = secrets.token_hex(12)
        key = latent_key(latent_id)
        fields = {"pack": pack, "data": np.asarray(z, dtype="<f4").tobytes()}
        if grey:
            fields["grey"] = "1"
        if photo_id is not None and place is not None:
            fields.update(photo=photo_id, place=place.to_bytes())
        if modulation is not None:
            fields["mod"] = np.asarray(modulation, dtype="<f4").tobytes()
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.ttl_s)
        pipe.execute()
        return latent_id

    def get(self, latent_id: str, pack: str) -> np.ndarray:
        return self.get_face(latent_id, pack).z

    def get_face(self, latent_id: str, pack: str) -> CachedFace:
        """The cached latent and its source (renews its TTL); NotFound when unknown or expired."""
        if not latent_id or len(latent_id) > 64 or not latent_id.isalnum():
            raise InvalidArgument(f"latent_id {latent_id[:64]!r} is not an id this gateway issues")
        key = latent_key(latent_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hgetall(key)
        pipe.expire(key, self.ttl_s)
        entry, _ = pipe.execute()
        if not entry:
            self._miss.inc()
            raise NotFound(f"latent {latent_id} is unknown or expired (kept {self.ttl_s}s after last use); "
                           f"send the image again")
        self._hit.inc()
        if entry[b"pack"].decode() != pack:
            raise InvalidArgument(f"latent {latent_id} belongs to pack {entry[b'pack'].decode()!r}, "
                                  f"not {pack!r}")
        z = np.frombuffer(entry[b"data"], dtype="<f4").copy()
        mod = np.frombuffer(entry[b"mod"], dtype="<f4").copy() if b"mod" in entry else None
        if b"photo" not in entry:
            return CachedFace(z, grey=b"grey" in entry, modulation=mod)
        return CachedFace(z, grey=b"grey" in entry, photo_id=entry[b"photo"].decode(),
                          place=PhotoPlace.from_bytes(entry[b"place"]), modulation=mod)


class PhotoCache:
    """Photo files by id (their sha256), kept ttl_s after their last use and at most max_bytes in all:
    put() evicts the least recently used photos beyond that. With several gateways on one Redis the
    bound holds after each put (they may evict a little more than needed when they put at once)."""

    def __init__(self, client: redis.Redis, ttl_s: int, max_bytes: int = DEFAULT_PHOTO_CACHE_MB << 20):
        self.r, self.ttl_s, self.max_bytes = client, ttl_s, max_bytes
        self._hit, self._miss = cache_counters("photo")

    def put(self, data: bytes) -> str | None:
        """Keep a photo file; returns its id, or None when the cache is off (max_bytes 0) or the photo alone
        is larger than max_bytes."""
        if not 0 < len(data) <= self.max_bytes:
            return None
        photo_id = hashlib.sha256(data).hexdigest()[:32]
        now = time.time()
        pipe = self.r.pipeline(transaction=True)
        # a photo sent again is not written again (nor appended to Redis's AOF again): its TTL is renewed
        pipe.set(photo_key(photo_id), data, ex=self.ttl_s, nx=True)
        pipe.expire(photo_key(photo_id), self.ttl_s)
        pipe.zadd(PHOTO_INDEX, {photo_id: now})
        pipe.hset(PHOTO_SIZES, photo_id, len(data))
        pipe.execute()
        self._evict(now)
        return photo_id

    def get(self, photo_id: str) -> bytes | None:
        """The photo file (its TTL and last use renewed), or None when it expired or was evicted."""
        pipe = self.r.pipeline(transaction=True)
        pipe.get(photo_key(photo_id))
        pipe.expire(photo_key(photo_id), self.ttl_s)
        pipe.zadd(PHOTO_INDEX, {photo_id: time.time()}, xx=True)
        data, _, _ = pipe.execute()
        if data is None:
            self._miss.inc()
            self._forget([photo_id])
            return None
        self._hit.inc()
        return data

    def total_bytes(self) -> int:
        return sum(int(v) for v in self.r.hvals(PHOTO_SIZES))

    def _evict(self, now: float) -> None:
        """Drop the index entries of expired photos, then the least recently used photos beyond max_bytes."""
        expired = [m.decode() for m in self.r.zrangebyscore(PHOTO_INDEX, "-inf", now - self.ttl_s)]
        self._forget(expired)
        sizes = {k.decode(): int(v) for k, v in self.r.hgetall(PHOTO_SIZES).items()}
        total = sum(sizes.values())
        if total <= self.max_bytes:
            return
        evict = []
        for member in self.r.zrange(PHOTO_INDEX, 0, -1):  # least recently used first
            if total <= self.max_bytes:
                break
            photo_id = member.decode()
            total -= sizes.get(photo_id, 0)
            evict.append(photo_id)
        self._forget(evict)

    def _forget(self, photo_ids: list[str]) -> None:
        if not photo_ids:
            return
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(*[photo_key(i) for i in photo_ids])
        pipe.zrem(PHOTO_INDEX, *photo_ids)
        pipe.hdel(PHOTO_SIZES, *photo_ids)
        pipe.execute()
