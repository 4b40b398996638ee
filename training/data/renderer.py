"""Procedural synthetic faces with exact ground truth.

Every face is a pure function of two float32 arrays:

* ``Faces.identity``   (N, len(IDENTITY_PARAMS)), every column in [0, 1]: who
  the person is (face shape, skin tone, eyes, nose, mouth, hair style,
  background, ...). Column order is ``IDENTITY_PARAMS``.
* ``Faces.attributes`` (N, len(ATTRIBUTES)) = (N, 6), every column in [0, 1]:
  the editable attributes ``smile, eyeglasses, beard, blond_hair, yaw, age``.
  A value > 0.5 means "present"; for yaw, > 0.5 means turned to the image's
  right and 0.5 is frontal.

``render(faces, size)`` draws them as (N, size, size, 3) uint8 RGB images. It is
deterministic and vectorised over the batch (numpy broadcasting on (N, H, W)
grids; only a loop over the handful of facial parts). There is no noise, so
``with_attribute(faces, name, value)`` gives the *true* counterfactual: the same
person with one attribute changed, and rendering it changes only the pixels of
that attribute's part of the face (plus anti-aliased edges of those parts).

Coordinates: every part is laid out in normalised image coordinates
x, y in [-1, 1] (x to the right, y downwards, pixel i has its centre at
-1 + (i + 0.5) * 2 / size), so 32x32 and 64x64 renders show the same faces.
Edges are anti-aliased: the coverage of a shape is a linear ramp of its signed
distance over one pixel. ``regions(faces)`` gives each part's box per face.

What each attribute draws (all continuous in their value; the binary ones are
blended by their value as opacity):

* smile: mouth curvature, corners 0.12 below (0) to 0.12 above (1) the middle;
  above 0.55 the mouth opens (dark inside, upper teeth) and widens a little.
* eyeglasses: dark elliptical frames around both eyes, a bridge and arms to the
  face outline, lightly tinted lenses.
* beard: chin, jaw, sideburns (up to ear level) and upper lip, in the hair
  colour darkened and kept apart from the skin's brightness.
* blond_hair: hair (and beard, eyebrow) colour, dark brown/black -> brown -> blond.
* yaw: the head turns by (2 yaw - 1) * 30 degrees: eyes, nose, mouth move on a
  sphere towards the turned side (nose tip most), the far eye and far half of the
  face foreshorten, the hair mass slides the other way, the near ear grows.
* age: forehead lines and nasolabial folds (opacity 0.85 age), hair greying
  (0.7 age**2 towards grey), skin 15% paler at age 1.

Run ``python -m training.data.renderer --out preview.png --n 64 --size 64`` for a
preview grid (and the speed), ``--counterfactual ATTR`` for rows of
(original, ATTR = 0, ATTR = 1).

The drawing itself (parameters, colours, geometry, the parts) is in face_drawing.py.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from training.data.face_drawing import (  # noqa: F401 (the parameters are part of the renderer's interface)
    _ATTR,
    _FRAME_HALF,
    _PARTS,
    ATTRIBUTES,
    HAIR_STYLES,
    IDENTITY_PARAMS,
    _Canvas,
    _layout,
    _lenses,
)

_CHUNK = 128           # images drawn at once: keeps the working set in cache


@dataclasses.dataclass(frozen=True, eq=False)
class Faces:
    """Ground truth of N faces.

    identity:   (N, len(IDENTITY_PARAMS)) float32 in [0, 1], columns as IDENTITY_PARAMS.
    attributes: (N, len(ATTRIBUTES)) float32 in [0, 1], columns as ATTRIBUTES.
    (``eq=False``: the fields are arrays, compare them with numpy.)
    """

    identity: np.ndarray
    attributes: np.ndarray

    def __len__(self) -> int:
        return len(self.attributes)

    def attribute(self, name: str) -> np.ndarray:
        """(N,) float32 values of one attribute."""
        return self.attributes[:, _attribute_index(name)]


# --------------------------------------------------------------------------- sampling

def sample_faces(seed: int, n: int, correlated: bool = True) -> Faces:
    """N random faces, deterministic for `seed`.

    Identity and smile, blond_hair, yaw, age are uniform in [0, 1); eyeglasses
    and beard are 0/1. With `correlated`, older faces more often have a beard
    (P = 0.15 + 0.6 * age) and glasses (P = 0.2 + 0.5 * age); otherwise every
    attribute is independent and P(beard) = P(eyeglasses) = 0.5. Both modes
    draw the same random numbers, so they share identities and the continuous
    attributes.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    identity = rng.random((n, len(IDENTITY_PARAMS)), dtype=np.float32)
    smile, blond, yaw, age = rng.random((4, n), dtype=np.float32)
    u_glasses, u_beard = rng.random((2, n), dtype=np.float32)
    if correlated:
        p_glasses, p_beard = 0.2 + 0.5 * age, 0.15 + 0.6 * age
    else:
        p_glasses = p_beard = np.float32(0.5)
    glasses = (u_glasses < p_glasses).astype(np.float32)
    beard = (u_beard < p_beard).astype(np.float32)
    attributes = np.stack([smile, glasses, beard, blond, yaw, age], axis=1).astype(np.float32)
    return Faces(identity=identity, attributes=attributes)


def _attribute_index(name: str) -> int:
    if name not in _ATTR:
        raise ValueError(f"unknown attribute {name!r}; valid attributes: {', '.join(ATTRIBUTES)}")
    return _ATTR[name]


def with_attribute(faces: Faces, name: str, value) -> Faces:
    """The true counterfactual: same identity and other attributes, `name` set to `value`.

    value: a float in [0, 1] (or an (N,) array of them). Returns new arrays.
    """
    index = _attribute_index(name)
    value = np.asarray(value, dtype=np.float32)
    if not np.all(np.isfinite(value)) or np.any(value < 0) or np.any(value > 1):
        raise ValueError(f"value of {name!r} must be in [0, 1], got {value}")
    attributes = np.array(faces.attributes, dtype=np.float32, copy=True)
    attributes[:, index] = value
    return Faces(identity=np.array(faces.identity, dtype=np.float32, copy=True), attributes=attributes)


def render_seed(seed: int, n: int, size: int = 32, correlated: bool = True) -> tuple[np.ndarray, Faces]:
    """sample_faces(seed, n) and their images (N, size, size, 3) uint8."""
    faces = sample_faces(seed, n, correlated=correlated)
    return render(faces, size), faces


# --------------------------------------------------------------------------- render

def _validate(faces: Faces, size) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(faces, Faces):
        raise ValueError(f"faces must be a Faces, got {type(faces).__name__}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    arrays = []
    for field, width, names in (("identity", len(IDENTITY_PARAMS), "IDENTITY_PARAMS"),
                                ("attributes", len(ATTRIBUTES), "ATTRIBUTES")):
        a = np.asarray(getattr(faces, field))
        if a.ndim != 2 or a.shape[1] != width:
            raise ValueError(f"faces.{field} must have shape (N, {width}) (columns as {names}), got {a.shape}")
        if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
            raise ValueError(f"faces.{field} must be real numbers, got dtype {a.dtype}")
        a = a.astype(np.float32)
        bad = ~np.isfinite(a) | (a < 0) | (a > 1)
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"faces.{field} values must be in [0, 1]; row {row}, column {col} "
                             f"is {a[row, col]}")
        arrays.append(a)
    if len(arrays[0]) != len(arrays[1]):
        raise ValueError(f"faces.identity has {len(arrays[0])} rows but faces.attributes has {len(arrays[1])}")
    return arrays[0], arrays[1]


def render(faces: Faces, size: int = 32) -> np.ndarray:
    """Draw faces as (N, size, size, 3) uint8 RGB; size >= 16 pixels (32 and 64 are the usual ones).

    A pure function of `faces` and `size`; each image depends only on its own row.
    """
    identity, attributes = _validate(faces, size)
    size = int(size)
    n = len(identity)
    out = np.empty((n, size, size, 3), np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        g = _layout(identity[start:stop], attributes[start:stop])
        cv = _Canvas(stop - start, size)
        for part in _PARTS:
            part(cv, g)
        img = cv.img
        img *= 255.0
        img += 0.5
        np.clip(img, 0.0, 255.0, out=img)
        out[start:stop] = img.transpose(0, 2, 3, 1)               # truncation after +0.5 rounds
    return out


def regions(faces: Faces) -> dict[str, np.ndarray]:
    """Normalised box (N, 4) = (y0, y1, x0, x1) of each attribute's part, per face.

    Pixel rows of a box at size S: from floor((y0 + 1) * S / 2) to ceil((y1 + 1) * S / 2).
    Keys: "eyes" (eyebrows, eyes and eyeglasses), "mouth" (the mouth at any smile),
    "beard" (beard, moustache, sideburns), "face" (the skin outline).
    """
    identity, attributes = _validate(faces, 16)
    g = _layout(identity, attributes)
    (lx, lw), (rx, rw), gy, gh = _lenses(g)
    gh = gh + _FRAME_HALF
    lip = 0.03
    boxes = {
        "eyes": (gy - gh, gy + gh, np.minimum(g.cx - g.al, lx - lw - _FRAME_HALF),
                 np.maximum(g.cx + g.ar, rx + rw + _FRAME_HALF)),
        # any smile: corners up to 0.65 * 0.12 above my, open centre 0.35 * 0.12 + 0.152 below
        "mouth": (g.my - 0.65 * 0.12 - 0.011 - lip, g.my + 0.35 * 0.12 + 0.152 - 0.011 + lip,
                  g.mx - g.mw_max - lip, g.mx + g.mw_max + lip),
        "beard": (g.ey + 0.10, g.cy + g.b + 0.035, g.cx - g.al - 0.035, g.cx + g.ar + 0.035),
        "face": (g.cy - g.b, g.cy + g.b, g.cx - g.al, g.cx + g.ar),
    }
    return {k: np.stack(v, axis=1).astype(np.float32) for k, v in boxes.items()}


# --------------------------------------------------------------------------- preview CLI

def _grid(images: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    """(N, S, S, 3) uint8 -> one (rows * (S + pad) + pad, ...) uint8 image on white."""
    n, s = len(images), images.shape[1]
    rows = max(1, -(-n // cols))
    out = np.full((rows * (s + pad) + pad, cols * (s + pad) + pad, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (s + pad): pad + r * (s + pad) + s, pad + c * (s + pad): pad + c * (s + pad) + s] = im
    return out


def _speed(size: int, n: int = 4096, repeats: int = 3) -> float:
    """Images per second of render() at `size` (best of `repeats`)."""
    faces = sample_faces(12345, n)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        render(faces, size)
        best = min(best, time.perf_counter() - start)
    return n / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.data.renderer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="preview.png", help="PNG to write")
    parser.add_argument("--n", type=int, default=64, help="number of faces")
    parser.add_argument("--size", type=int, default=64, help="pixels per side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--independent", action="store_true", help="sample attributes independently")
    parser.add_argument("--counterfactual", metavar="ATTR", choices=ATTRIBUTES,
                        help="rows of (original, ATTR = 0, ATTR = 1)")
    parser.add_argument("--scale", type=int, default=1, help="nearest-neighbour upscaling of the PNG")
    parser.add_argument("--bench", type=int, default=4096, help="faces rendered to measure images/s (0: skip)")
    args = parser.parse_args(argv)
    from PIL import Image

    faces = sample_faces(args.seed, args.n, correlated=not args.independent)
    if args.counterfactual:
        triples = np.stack([render(faces, args.size),
                            render(with_attribute(faces, args.counterfactual, 0.0), args.size),
                            render(with_attribute(faces, args.counterfactual, 1.0), args.size)], axis=1)
        per_column = 8                                          # faces per column of triples
        groups = -(-args.n // per_column)
        blocks = [_grid(triples[i * per_column:(i + 1) * per_column].reshape(-1, *triples.shape[2:]), 3)
                  for i in range(groups)]
        height = max(b.shape[0] for b in blocks)
        blocks = [np.pad(b, ((0, height - b.shape[0]), (0, 6), (0, 0)), constant_values=255) for b in blocks]
        sheet = np.concatenate(blocks, axis=1)
    else:
        sheet = _grid(render(faces, args.size), cols=int(np.ceil(np.sqrt(max(args.n, 1)))))
    if args.scale > 1:
        sheet = sheet.repeat(args.scale, axis=0).repeat(args.scale, axis=1)
    Image.fromarray(sheet).save(args.out)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    if args.bench > 0:
        print(f"render speed at {args.size}x{args.size}: {_speed(args.size, args.bench):.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
