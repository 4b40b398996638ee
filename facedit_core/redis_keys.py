"""The Redis schema: every key the services write, built in one place.

  facedit:pack:<pack>:active                   string  active version
  facedit:pack:<pack>:<version>:meta           hash    latent_dim, default_method, attributes (JSON), loaded_at
  facedit:pack:<pack>:<version>:dir            hash    <direction id> -> DirectionRecord JSON
  facedit:pack:<pack>:<version>:vec            hash    <direction id> -> float32 little-endian bytes (dim,)
  facedit:pack:<pack>:stamp                    string  random token, replaced by every write (publish, put)
  facedit:latent:<latent id>                   hash    pack, data = float32 little-endian bytes (latent_dim,); a TTL;
                                                       grey = 1 for a grey source image; a face from a photo also
                                                       photo = <photo id>, place = float64 bytes (affine 6,
                                                       landmarks 10, box 4, score 1)
  facedit:photo:<photo id>                     string  the photo file a cached face came from; the latents' TTL
  facedit:photos                               zset    <photo id> -> last use (unix seconds): eviction order
  facedit:photo_sizes                          hash    <photo id> -> bytes: the photos' total is bounded
"""
from __future__ import annotations

PACK_PREFIX = "facedit:pack"
LATENT_PREFIX = "facedit:latent:"
PHOTO_PREFIX = "facedit:photo:"
PHOTO_INDEX = "facedit:photos"
PHOTO_SIZES = "facedit:photo_sizes"


def pack_key(pack: str, *parts: str) -> str:
    """facedit:pack:<pack>[:<part>...]"""
    return ":".join([PACK_PREFIX, pack, *parts])


def latent_key(latent_id: str) -> str:
    return LATENT_PREFIX + latent_id


def photo_key(photo_id: str) -> str:
    return PHOTO_PREFIX + photo_id
