"""How alike two stacks of faces are: pixel error (MAE, MSE of pixels in [0, 1]) and perceptual
hash similarity (dhash / phash / whash: 1 - Hamming distance / bits, as in the CRG paper's Table 2)."""
from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image


def _r(x: float, digits: int = 4) -> float:
    return round(float(x), digits)


def hash_similarity(a: np.ndarray, b: np.ndarray) -> dict:
    """Mean 1 - Hamming/bits between hashes of two (N, R, R, 3) uint8 stacks."""
    sims = {"dhash": [], "phash": [], "whash": []}
    for x, y in zip(a, b):
        ix, iy = Image.fromarray(x), Image.fromarray(y)
        for name in sims:
            fn = getattr(imagehash, name)
            hx, hy = fn(ix), fn(iy)
            sims[name].append(1.0 - (hx - hy) / hx.hash.size)
    return {k: _r(np.mean(v)) for k, v in sims.items()}


def image_error(a: np.ndarray, b: np.ndarray, hashes: int) -> dict:
    """MAE and MSE of pixels in [0, 1] over all images, hash similarities on the first `hashes`."""
    x, y = a.astype(np.float32) / 255, b.astype(np.float32) / 255
    return {"mae": _r(np.abs(x - y).mean()), "mse": _r(((x - y) ** 2).mean(), 5),
            **hash_similarity(a[:hashes], b[:hashes])}
