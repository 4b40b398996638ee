"""The Redis schema: every key the services write, built in one place.

  facedit:pack:<pack>:active                   string  active version
  facedit:pack:<pack>:<version>:meta           hash    latent_dim, default_method, attributes (JSON), loaded_at
  facedit:pack:<pack>:<version>:dir            hash    <direction id> -> DirectionRecord JSON
  facedit:pack:<pack>:<version>:vec            hash    <direction id> -> float32 little-endian bytes (dim,)
  facedit:pack:<pack>:stamp                    string  random token, replaced by every write (publish, put)
  facedit:latent:<latent id>                   hash    pack, data = float32 little-endian bytes (latent_dim,); a TTL
"""
from __future__ import annotations

PACK_PREFIX = "facedit:pack"
LATENT_PREFIX = "facedit:latent:"


def pack_key(pack: str, *parts: str) -> str:
    """facedit:pack:<pack>[:<part>...]"""
    return ":".join([PACK_PREFIX, pack, *parts])


def latent_key(latent_id: str) -> str:
    return LATENT_PREFIX + latent_id
