"""The gateway's photo cache (services/gateway/cache.py) in a real Redis: photos are kept once, with the
latents' TTL, and at most max_bytes in all, evicting the least recently used."""
from __future__ import annotations

import time

import numpy as np

from facedit_core.redis_keys import PHOTO_INDEX, PHOTO_SIZES, photo_key


def _photo(k: int, size: int = 40_000) -> bytes:
    return bytes([k]) * size


def test_photos_beyond_the_limit_evict_the_least_recently_used(redis_client):
    from services.gateway.cache import PhotoCache

    cache = PhotoCache(redis_client, ttl_s=60, max_bytes=100_000)
    a, b = cache.put(_photo(1)), cache.put(_photo(2))
    assert a != b and cache.put(_photo(1)) == a  # the same photo is kept once
    assert cache.total_bytes() == 80_000
    time.sleep(0.01)
    assert cache.get(a) == _photo(1)  # a is now the most recently used
    c = cache.put(_photo(3))  # 120,000 > 100,000: b goes
    assert cache.get(b) is None and cache.get(a) == _photo(1) and cache.get(c) == _photo(3)
    assert cache.total_bytes() == 80_000 <= cache.max_bytes
    assert redis_client.ttl(photo_key(a)) > 50
    assert set(redis_client.hkeys(PHOTO_SIZES)) == set(redis_client.zrange(PHOTO_INDEX, 0, -1)) == {a.encode(), c.encode()}
    assert cache.put(_photo(4, 100_001)) is None  # larger than the whole cache: not kept
    assert PhotoCache(redis_client, ttl_s=60, max_bytes=0).put(_photo(5)) is None  # off


def test_an_expired_photo_leaves_the_index_at_the_next_put(redis_client):
    from services.gateway.cache import PhotoCache

    cache = PhotoCache(redis_client, ttl_s=1, max_bytes=1_000_000)
    old = cache.put(_photo(1))
    time.sleep(2.1)
    assert redis_client.get(photo_key(old)) is None  # Redis let it expire
    cache.put(_photo(2))
    assert old.encode() not in redis_client.hkeys(PHOTO_SIZES) and cache.total_bytes() == 40_000


def test_a_cached_latent_keeps_its_photo_place_and_greyness(redis_client):
    from services.gateway.cache import LatentCache, PhotoPlace

    cache = LatentCache(redis_client, ttl_s=60)
    place = PhotoPlace(affine=np.arange(6.0).reshape(2, 3), landmarks=np.arange(10.0).reshape(5, 2) + 0.25,
                       box=np.array([1.0, 2.0, 30.0, 40.0]), score=0.99)
    face = cache.get_face(cache.put("p", np.ones(4, np.float32), grey=True, photo_id="abc", place=place), "p")
    assert face.grey and face.photo_id == "abc" and face.place.score == 0.99
    np.testing.assert_array_equal(face.place.affine, place.affine)
    np.testing.assert_array_equal(face.place.landmarks, place.landmarks)
    np.testing.assert_array_equal(face.place.box, place.box)
    plain = cache.get_face(cache.put("p", np.ones(4, np.float32)), "p")
    assert not plain.grey and plain.photo_id is None and plain.place is None
