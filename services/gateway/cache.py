"""The gateway's latent cache in Redis: a client sends a photo once, then edits by id.

Key facedit:latent:<id> (hash: pack, data = float32 little-endian bytes, and for a face of a faithful
inversion mod = its generator modulation, float32 little-endian) with a TTL that each use renews. Lookups by id count as hits or misses in
facedit_cache_lookups_total{cache="latent"} (services/common/metrics.py).
"""
from __future__ import annotations

import secrets

import numpy as np
import redis

from facedit_core.errors import InvalidArgument, NotFound
from facedit_core.redis_keys import latent_key
from services.common.metrics import cache_counters


class LatentCache:
    def __init__(self, client: redis.Redis, ttl_s: int):
        self.r, self.ttl_s = client, ttl_s
        self._hit, self._miss = cache_counters("latent")

    def put(self, pack: str, z: np.ndarray, modulation: np.ndarray | None = None) -> str:
        """z (D,), modulation None or (M,) -> a new latent id."""
        latent_id = secrets.token_hex(12)
        key = latent_key(latent_id)
        fields = {"pack": pack, "data": np.asarray(z, dtype="<f4").tobytes()}
        if modulation is not None:
            fields["mod"] = np.asarray(modulation, dtype="<f4").tobytes()
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, self.ttl_s)
        pipe.execute()
        return latent_id

    def get(self, latent_id: str, pack: str) -> np.ndarray:
        """The cached z (D,) float32; see get_face for its modulation too."""
        return self.get_face(latent_id, pack)[0]

    def get_face(self, latent_id: str, pack: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(z (D,), modulation (M,) or None) cached under latent_id; NotFound when expired."""
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
        mod = entry.get(b"mod")
        return (np.frombuffer(entry[b"data"], dtype="<f4").copy(),
                np.frombuffer(mod, dtype="<f4").copy() if mod else None)
