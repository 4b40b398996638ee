"""Face alignment geometry: five landmarks -> a similarity transform onto a pack's template,
the aligned crop, and pasting an edited crop back into the photo with a soft blend.

Landmarks: (5, 2) float32 pixel coordinates (x, y) in the order MTCNN gives them: the eye on
the image's left, the other eye, nose tip, mouth corner on the image's left, the other corner.
Transforms are 2x3 float64 matrices A mapping photo coordinates p to crop coordinates A @ [p, 1].
Pixel coordinates refer to pixel centres at integer positions (0 .. size - 1). numpy + PIL only.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from facedit_core.images import luminance


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping
    points src (K, 2) onto dst (K, 2) (Umeyama 1991). Returns A (2, 3)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two (K, 2) point sets with K >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    fix = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ fix @ vt
    var = (s ** 2).sum() / len(src)
    if var <= 0:
        raise ValueError("the source points coincide")
    scale = float(np.trace(np.diag(sig) @ fix) / var)
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def invert(a: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine transform."""
    m = np.vstack([a, [0.0, 0.0, 1.0]])
    return np.linalg.inv(m)[:2]


def apply(a: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (K, 2) through A (2, 3)."""
    points = np.asarray(points, np.float64)
    return points @ a[:, :2].T + a[:, 2]


def scale_of(a: np.ndarray) -> float:
    """The uniform scale of a similarity transform."""
    return float(np.sqrt(abs(np.linalg.det(a[:, :2]))))


def _warp(image: Image.Image, a: np.ndarray, size: tuple[int, int], resample) -> Image.Image:
    """Output pixel q takes input pixel A^-1 q (PIL wants the inverse, in pixel-corner coords)."""
    inv = invert(a)
    # PIL samples at output pixel centres (q + 0.5) and reads input at corner-based coordinates:
    # p_corner = inv @ (q_corner - 0.5) + 0.5
    shift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    unshift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    m = (unshift @ np.vstack([inv, [0, 0, 1]]) @ shift)[:2]
    return image.transform(size, Image.Transform.AFFINE, tuple(m.ravel()), resample=resample)


def crop(photo: np.ndarray, a: np.ndarray, size: int) -> np.ndarray:
    """The aligned crop: photo (H, W, 3) uint8 -> (size, size, 3) uint8 with crop[q] = photo[A^-1 q].

    A large photo face is first shrunk with an antialiasing filter so that the warp itself does
    not alias (a 400-pixel face into a 64-pixel crop)."""
    image = Image.fromarray(photo)
    shrink = 1.0 / scale_of(a)  # photo pixels per crop pixel
    if shrink > 2.0:
        factor = int(shrink // 1.5)
        small = image.reduce(factor)
        a = a @ np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2], [0, 0, 1]])
        image = small
    return np.asarray(_warp(image, a, (size, size), Image.Resampling.BILINEAR))


MASK_MARGIN = 1.5  # crop pixels between the mask's edge and the crop's edge: the two outer rows/columns are 0


def blend_mask(template: np.ndarray, size: int, feather: float = 0.1, power: float = 3.0) -> np.ndarray:
    """A soft face mask (size, size) float32 in [0, 1] in crop coordinates: a superellipse
    |x/rx|^power + |y/ry|^power = 1 (power 2: an ellipse; 3: fuller towards the mouth corners) around
    the template landmarks, reaching from above the eyes to below the mouth, 1 inside and falling
    smoothly to 0 at its edge over `feather` of the crop size (measured along each ray from the centre).

    The shape is kept MASK_MARGIN pixels inside the crop on every side (shrunk where it would reach
    past an edge: a face's crop ends at the chin), so the mask is exactly 0 on the crop's two outer
    rows and columns and a pasted face has no edge where the crop ends."""
    t = np.asarray(template, np.float64)
    eyes, mouth = t[:2].mean(0), t[3:].mean(0)
    centre = (eyes + mouth) / 2 + np.array([0.0, 0.05 * size])
    eye_dist = np.linalg.norm(t[1] - t[0])
    radii = np.array([1.15 * eye_dist, 0.95 * np.linalg.norm(mouth - eyes) + 0.55 * eye_dist])
    lo = np.clip(centre - radii, MASK_MARGIN, size - 1 - MASK_MARGIN)
    hi = np.clip(centre + radii, MASK_MARGIN, size - 1 - MASK_MARGIN)
    centre, radii = (lo + hi) / 2, np.maximum((hi - lo) / 2, 1e-6)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dx, dy = xx - centre[0], yy - centre[1]
    r = (np.abs(dx / radii[0]) ** power + np.abs(dy / radii[1]) ** power) ** (1.0 / power)  # 1 on the edge
    # pixels from each pixel to the edge along the ray from the centre: |p - c| (1/r - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.where(r > 0, np.hypot(dx, dy) * (1.0 / r - 1.0), np.inf)
    s = np.clip(inside / max(feather * size, 1e-6), 0.0, 1.0)
    mask = s * s * (3.0 - 2.0 * s)  # smoothstep: 0 on and outside the edge, 1 deeper than the feather
    return np.where(r < 1.0, mask, 0.0).astype(np.float32)


def paste(photo: np.ndarray, a: np.ndarray, face: np.ndarray, mask: np.ndarray,
          original_face: np.ndarray | None = None, luminance_only: bool = False) -> np.ndarray:
    """Blend an edited aligned crop back into the photo.

    photo (H, W, 3) uint8; a: the photo -> crop transform of that face; face (S, S, 3) uint8 the
    edited crop; mask (S, S) float32 in [0, 1]. With `original_face` (the generator's rendering of
    the unedited latent), only the change face - original_face is added to the photo ("delta"
    mode: the photo keeps its resolution and identity outside what the edit changes); without it
    the crop replaces the photo's pixels ("replace" mode). With `luminance_only` (a greyscale
    photo) only the luminance of the crop (or of the change) is used, the same on every channel, so
    a grey photo stays grey: equal channels in, equal channels out. Returns a new (H, W, 3) uint8 photo.
    """
    h, w = photo.shape[:2]
    inv = invert(a)
    # only the photo region the crop covers
    s = face.shape[0]
    corners = apply(inv, np.array([[0, 0], [s - 1, 0], [0, s - 1], [s - 1, s - 1]], np.float64))
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x0 >= x1 or y0 >= y1:
        return photo.copy()
    # region coordinates = photo coordinates - (x0, y0); the crop -> region transform
    a_region = (np.array([[1.0, 0, -x0], [0, 1.0, -y0], [0, 0, 1.0]]) @ np.vstack([inv, [0, 0, 1]]))[:2]
    size = (x1 - x0, y1 - y0)

    def warp(pixels: np.ndarray, mode) -> np.ndarray:
        """(S, S) or (S, S, 3) uint8 crop -> (h, w, 1 or 3) float32 in the region."""
        out = np.asarray(_warp(Image.fromarray(pixels), a_region, size, mode)).astype(np.float32)
        return out if out.ndim == 3 else out[..., None]

    def crop_values(x: np.ndarray) -> np.ndarray:
        """A crop as the values pasted: its luminance (S, S) with luminance_only, else (S, S, 3)."""
        return luminance(x) if luminance_only else x.astype(np.float32)

    m = warp((mask * 255).astype(np.uint8), Image.Resampling.BILINEAR) / 255
    region = photo[y0:y1, x0:x1].astype(np.float32)
    if original_face is None:
        new = warp(np.clip(crop_values(face) + 0.5, 0, 255).astype(np.uint8), Image.Resampling.BICUBIC)
    else:
        change = crop_values(face) - crop_values(original_face)  # [-255, 255]
        # warp the signed change through uint8 as two halves (PIL warps 8-bit images)
        pos = warp(np.clip(change + 0.5, 0, 255).astype(np.uint8), Image.Resampling.BICUBIC)
        neg = warp(np.clip(-change + 0.5, 0, 255).astype(np.uint8), Image.Resampling.BICUBIC)
        new = region + pos - neg
    out = photo.copy()
    out[y0:y1, x0:x1] = np.clip(region * (1 - m) + new * m + 0.5, 0, 255).astype(np.uint8)
    return out



REGION_GROW = 2.0        # a measuring region is this many times a face box's longer side
REGION_MAX_SIDE = 384    # and shrunk to at most this many pixels a side


def region(photo: np.ndarray, box: np.ndarray, landmarks: np.ndarray, grow: float = REGION_GROW,
           max_side: int = REGION_MAX_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """The part of a photo around one face, to find and measure it again: a square centred on its box,
    `grow` times the box's longer side, clipped to the photo, shrunk (area-averaged) to at most `max_side`
    pixels a side. Returns (pixels (h, w, 3) uint8, the landmarks (5, 2) in the region's pixels)."""
    h, w = photo.shape[:2]
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    side = grow * max(x1 - x0, y1 - y0, 1.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = max(int(np.floor(cx - side / 2)), 0), max(int(np.floor(cy - side / 2)), 0)
    right, bottom = min(int(np.ceil(cx + side / 2)), w), min(int(np.ceil(cy + side / 2)), h)
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    part = photo[top:bottom, left:right]
    factor = min(1.0, max_side / max(part.shape[:2]))
    if factor < 1.0:
        size = (max(1, round(part.shape[1] * factor)), max(1, round(part.shape[0] * factor)))
        part = np.asarray(Image.fromarray(part).resize(size, Image.Resampling.BOX))
    scale = np.array([part.shape[1] / (right - left), part.shape[0] / (bottom - top)])
    # pixel centres: photo x -> region (x - left + 0.5) * scale - 0.5
    return np.ascontiguousarray(part), (np.asarray(landmarks, np.float64) - [left, top] + 0.5) * scale - 0.5


def no_face_message(width: int, height: int, turns: list[int] | None = None, what: str = "photo") -> str:
    """The answer to a photo without a face: what the detector needs, and what turning it showed. turns:
    the clockwise turns (degrees, best first) in which a face is found, as FaceDetector.turns_with_faces
    gives them; [] = none; None = not checked."""
    if turns:
        return (f"no face found in the {width}x{height} {what} as it is, but turned {turns[0]} degrees clockwise "
                f"it shows one: it is probably stored {'upside down' if turns[0] == 180 else 'sideways'} (without "
                f"an EXIF orientation tag); turn it {turns[0]} degrees clockwise and send it again")
    checked = ("it was also checked turned 90, 180 and 270 degrees: no face either" if turns is not None else
               "if it is sideways, turn it upright")
    return (f"no face found in the {width}x{height} {what}: faces must be at least about 20 pixels wide, seen "
            f"from the front or side, and not cut off ({checked})")
