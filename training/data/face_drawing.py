"""How the renderer draws a face (training/data/renderer.py): the face's parameters, colours,
the geometry of every part from the parameters (`_layout`), the canvas and the parts, painted in
order (`_PARTS`). Everything here is private to the renderer; its module docstring says what
each attribute draws.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

IDENTITY_PARAMS: tuple[str, ...] = (
    "face_width",            # half-width of the face ellipse
    "face_height",           # half-height of the face ellipse
    "jaw_taper",             # 0 = round jaw, 1 = narrow, pointed chin
    "skin_tone",             # 0 = pale ... 1 = dark brown
    "eye_spacing",           # distance between the eyes
    "eye_size",              # width (and height) of the eyes
    "nose_length",           # distance from the eyes to the nose tip
    "nose_width",            # width of the nose base
    "mouth_width",           # width of the mouth
    "hair_style",            # 4 styles: [0, .25) short, [.25, .5) side part, [.5, .75) long, [.75, 1] curly
    "hair_volume",           # how far the hair stands off the head (and how long long hair is)
    "background_hue",        # hue of the background
    "background_lightness",  # lightness of the background
    "iris_color",            # brown, hazel, green, blue, grey
    "clothing_hue",          # hue of the shirt on the shoulders
)
ATTRIBUTES: tuple[str, ...] = ("smile", "eyeglasses", "beard", "blond_hair", "yaw", "age")
HAIR_STYLES: tuple[str, ...] = ("short", "side_part", "long", "curly")

_ID = {name: i for i, name in enumerate(IDENTITY_PARAMS)}
_ATTR = {name: i for i, name in enumerate(ATTRIBUTES)}
_FULL_FRAME = False    # testing aid: draw every part on the whole frame instead of its box


# --------------------------------------------------------------------------- colours

def _palette(t: np.ndarray, colours) -> np.ndarray:
    """Piecewise-linear colour map: t (N,) in [0, 1] -> (N, 3) float32."""
    colours = np.asarray(colours, dtype=np.float32)
    stops = np.linspace(0, 1, len(colours), dtype=np.float32)
    return np.stack([np.interp(t, stops, colours[:, c]) for c in range(3)], axis=1).astype(np.float32)


def _luma(colour: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N,) luminance (elementwise, not a BLAS product: same result in any batch)."""
    return 0.30 * colour[:, 0] + 0.59 * colour[:, 1] + 0.11 * colour[:, 2]


def _contrasting(colour: np.ndarray, skin: np.ndarray, gap: float = 0.15) -> np.ndarray:
    """Facial hair colour (N, 3) kept `gap` away from the skin's luminance.

    A colour clearly lighter than the skin stays; one close to it (or darker) is
    darkened to at most skin - gap. The blend between the two is continuous.
    """
    lum, lum_skin = _luma(colour), _luma(skin)
    darker = np.maximum(np.minimum(lum, lum_skin - gap), 0.04)
    w = np.clip((lum - lum_skin) / gap - 1.0, 0.0, 1.0)         # 1 when lum >= skin + 2 gap
    target = w * lum + (1.0 - w) * darker
    return (colour * (target / lum)[:, None]).astype(np.float32)


def _hsv(h: np.ndarray, s, v) -> np.ndarray:
    """HSV -> RGB for (N,) arrays, (N, 3) float32."""
    h, s, v = (np.broadcast_to(np.asarray(q, dtype=np.float32), h.shape) for q in (h, s, v))
    out = []
    for k in (5.0, 3.0, 1.0):
        q = (k + 6.0 * h) % 6.0
        out.append(v - v * s * np.clip(np.minimum(q, 4.0 - q), 0.0, 1.0))
    return np.stack(out, axis=1).astype(np.float32)


_SKIN = [(0.98, 0.86, 0.76), (0.93, 0.75, 0.62), (0.80, 0.58, 0.42), (0.58, 0.39, 0.26), (0.37, 0.24, 0.16)]
_IRIS = [(0.36, 0.20, 0.09), (0.50, 0.38, 0.14), (0.22, 0.50, 0.28), (0.22, 0.45, 0.80), (0.52, 0.56, 0.62)]
_HAIR = [(0.12, 0.08, 0.06), (0.45, 0.30, 0.15), (0.95, 0.80, 0.40)]   # blond_hair 0 -> 0.5 -> 1
_GREY_HAIR = np.array((0.78, 0.78, 0.77), np.float32)
_WHITE = np.array((0.97, 0.97, 0.95), np.float32)
_PUPIL = np.array((0.04, 0.03, 0.03), np.float32)
_FRAME = np.array((0.06, 0.06, 0.08), np.float32)
_LENS = np.array((0.80, 0.90, 1.00), np.float32)
_MOUTH_INSIDE = np.array((0.30, 0.04, 0.06), np.float32)
_TEETH = np.array((0.97, 0.95, 0.90), np.float32)
_LIP = np.array((0.78, 0.28, 0.30), np.float32)


# --------------------------------------------------------------------------- layout

# Per hair style: top and side extent beyond the face, how far the hair hangs
# down (y = const + k_ey * eye_y + k_vol * volume), and the front hairline
# y = cy - h0 * b + slope * dx + curve * dx**2 on the face; bump = curls.
_HAIR_TABLE = np.array([
    # top   side   L_c   L_ey  L_vol  h0    slope  curve  bump
    [0.10, 0.040, -0.02, 1.0, 0.05, 0.68, 0.00, 0.50, 0.000],  # short
    [0.16, 0.075, 0.16, 1.0, 0.08, 0.58, -0.28, 0.40, 0.000],  # side part
    [0.13, 0.110, 0.45, 0.0, 0.40, 0.66, 0.00, 1.20, 0.000],  # long
    [0.25, 0.200, 0.20, 0.0, 0.12, 0.64, 0.00, 0.50, 0.035],  # curly
], np.float32)


def _layout(identity: np.ndarray, attributes: np.ndarray) -> SimpleNamespace:
    """Geometry (normalised units, (N,) float32 arrays) and colours ((N, 3)) of N faces."""
    p = {name: identity[:, i] for name, i in _ID.items()}
    smile, glasses, beard, blond, yaw, age = (attributes[:, i] for i in range(len(ATTRIBUTES)))
    g = SimpleNamespace(glasses=glasses, beard=beard, age=age)
    t = 2.0 * yaw - 1.0                     # -1 = turned left, 0 = frontal, +1 = turned right
    g.t = t
    at = np.abs(t)

    # The head turns by theta = t * 30 degrees. Features sit on a sphere of the face's
    # half-width and move by R * sin(phi + theta): the near eye moves more than the
    # far one, the nose (in front of the sphere) most; the far side foreshortens.
    # The skin outline slides towards the turn and its far side narrows, while
    # the hair (back of the head) slides the other way.
    theta = np.float32(np.pi / 6) * t
    sin_t, cos_t = _sin(theta), _sin(theta + np.float32(np.pi / 2))
    a = 0.38 + 0.12 * p["face_width"]
    g.cy = np.zeros_like(t)
    g.cx = 0.05 * t
    g.al = a * (1.0 - 0.03 * at - 0.12 * np.maximum(-t, 0.0))     # half-width left of cx
    g.ar = a * (1.0 - 0.03 * at - 0.12 * np.maximum(t, 0.0))      # half-width right of cx
    g.a = np.maximum(g.al, g.ar)
    g.hx = -0.05 * t                                               # centre of the hair mass
    g.b = 0.52 + 0.10 * p["face_height"]
    g.taper = 0.08 + 0.22 * p["jaw_taper"]                         # relative width lost at the chin

    # eyes: azimuth phi on a sphere of radius 0.8 a; width foreshortened by cos
    g.ey = g.cy - 0.12 * g.b
    phi = 0.55 + 0.20 * p["eye_spacing"]
    ew = 0.072 + 0.03 * p["eye_size"]
    cos_phi = _sin(phi + np.float32(np.pi / 2))
    g.eyes = []
    for side in (-1.0, 1.0):
        angle = side * phi + theta
        g.eyes.append((0.8 * a * _sin(angle), ew * _sin(angle + np.float32(np.pi / 2)) / cos_phi))
    g.eh = 0.58 * ew
    g.eyes_w0 = ew

    # nose: in front of the sphere, so the tip moves more than the bridge
    g.n_top_x, g.n_top_y = 0.95 * a * sin_t, g.ey + 0.04
    g.n_tip_x, g.n_tip_y = 1.25 * a * sin_t, g.ey + 0.15 + 0.10 * p["nose_length"]
    g.nw = (0.045 + 0.035 * p["nose_width"]) * (0.8 + 0.2 * cos_t)
    g.forehead_x = 0.9 * a * sin_t

    # mouth: s = curvature (-1 frown .. +1 smile), opening from smile 0.55 up
    g.mx, g.my = 1.05 * a * sin_t, g.cy + 0.58 * g.b
    squeeze = 0.7 + 0.3 * cos_t                                        # foreshortening
    g.mw0 = (0.12 + 0.06 * p["mouth_width"]) * squeeze                 # width of a neutral mouth
    g.mw = g.mw0 + 0.03 * smile * squeeze                               # a smile widens it
    g.mw_max = g.mw0 + 0.03 * squeeze
    g.curve = 2.0 * smile - 1.0
    g.open = np.clip((smile - 0.55) / 0.45, 0.0, 1.0)

    # hair
    style = np.minimum((p["hair_style"] * 4).astype(np.int64), 3)
    h = _HAIR_TABLE[style].T
    vol = 0.6 + 0.8 * p["hair_volume"]
    g.style = style
    g.hair_top, g.hair_side = h[0] * vol, h[1] * vol
    g.hair_bottom = h[2] + h[3] * g.ey + h[4] * p["hair_volume"]
    g.hairline, g.hair_slope, g.hair_curve, g.hair_bump = h[5], h[6], h[7], h[8]

    # colours
    skin = _palette(p["skin_tone"], _SKIN)
    pale = 0.75 * skin + 0.25 * np.array((0.92, 0.88, 0.86), np.float32)
    g.skin = skin + (pale - skin) * (0.6 * age)[:, None]
    hair = _palette(blond, _HAIR)
    g.hair = hair + (_GREY_HAIR - hair) * (0.7 * age * age)[:, None]
    g.beard_colour = _contrasting(0.65 * g.hair, g.skin)
    g.brow = g.beard_colour
    g.iris = _palette(p["iris_color"], _IRIS)
    g.bg = _hsv(p["background_hue"], 0.35, 0.50 + 0.42 * p["background_lightness"])
    g.cloth = _hsv(p["clothing_hue"], 0.55, 0.55)
    g.lip = 0.45 * g.skin + 0.55 * _LIP
    for k, v in list(vars(g).items()):
        if isinstance(v, np.ndarray) and v.dtype == np.float64:
            setattr(g, k, v.astype(np.float32))
    return g


# --------------------------------------------------------------------------- canvas

class _Box:
    """Rows/columns of the canvas that a part may touch, and their coordinates."""

    def __init__(self, canvas: "_Canvas", rows: slice, cols: slice):
        self.rows, self.cols = rows, cols
        self.y = canvas.coords[rows][None, :, None]   # (1, h, 1)
        self.x = canvas.coords[cols][None, None, :]   # (1, 1, w)
        self.wave_y = canvas.wave[rows][None, :, None]
        self.wave_x = canvas.wave[cols][None, None, :]


class _Canvas:
    """(n, 3, S, S) float32 image being painted, channel-first for speed."""

    def __init__(self, n: int, size: int):
        self.size = size
        self.inv_px = np.float32(size / 2.0)           # pixels per normalised unit
        self.coords = ((np.arange(size, dtype=np.float32) + 0.5) * np.float32(2.0 / size) - 1.0).astype(np.float32)
        self.wave = np.sin(self.coords * np.float32(26.0))      # curls; computed on the whole axis
        self.img = np.empty((n, 3, size, size), np.float32)

    def _span(self, lo, hi) -> slice:
        margin = 2.0 / self.inv_px                      # two pixels: covers the anti-aliased edge
        lo = float(np.min(lo)) - margin
        hi = float(np.max(hi)) + margin
        start = max(0, int(np.floor((lo + 1.0) * self.inv_px - 0.5)))
        stop = min(self.size, int(np.ceil((hi + 1.0) * self.inv_px - 0.5)) + 1)
        return slice(start, max(start, stop))

    def box(self, y0, y1, x0, x1) -> _Box | None:
        """Box covering [y0, y1] x [x0, x1] (normalised, per-face arrays) for all faces."""
        rows = slice(0, self.size) if _FULL_FRAME else self._span(y0, y1)
        cols = slice(0, self.size) if _FULL_FRAME else self._span(x0, x1)
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return None
        return _Box(self, rows, cols)

    def coverage(self, sd: np.ndarray) -> np.ndarray:
        """Signed distance (n, h, w), negative inside -> coverage in [0, 1] (in place)."""
        sd *= -self.inv_px
        sd += 0.5
        return np.clip(sd, 0.0, 1.0, out=sd)

    def paint(self, box: _Box, alpha: np.ndarray, colour: np.ndarray) -> None:
        """Blend `colour` ((n, 3) or (n, 3, h, w)) over the box with `alpha` (n, h, w)."""
        region = self.img[:, :, box.rows, box.cols]
        if colour.ndim == 2:
            colour = colour[:, :, None, None]
        region += alpha[:, None] * (colour - region)


def _sin(x):
    """sin(x) for |x| <= 3 by its Taylor series: only + and *, so exactly reproducible."""
    x2 = x * x
    return x * (1.0 - x2 / 6.0 * (1.0 - x2 / 20.0 * (1.0 - x2 / 42.0 * (1.0 - x2 / 72.0 * (1.0 - x2 / 110.0)))))


def _c(v: np.ndarray) -> np.ndarray:
    """(n,) -> (n, 1, 1) for broadcasting over (n, h, w)."""
    return v[:, None, None]


def _ellipse(box: _Box, cx, cy, a, b) -> np.ndarray:
    """Signed distance (n, h, w) to an axis-aligned ellipse ((n,) centre and half-axes).

    First-order estimate (k0 - 1) * k0 / k1 with k0 = |p / r| and k1 = |p / r**2|:
    exact on the outline and accurate within a few pixels of it, so rings and edges
    have the same thickness all round even for thin ellipses.
    """
    a, b = _c(a), _c(b)
    u = (box.x - _c(cx)) / a                                           # (n, 1, w)
    v = (box.y - _c(cy)) / b                                           # (n, h, 1)
    k0_sq = u * u + v * v
    ua, vb = u / a, v / b
    k1_sq = ua * ua + vb * vb
    small = np.minimum(a, b)
    k1_sq += 1e-12 / (small * small)                                   # centre: k0 / k1 -> min(a, b)
    k0_sq += 1e-12
    ratio = np.sqrt(k0_sq / k1_sq)
    sd = np.sqrt(k0_sq)
    sd -= 1.0
    sd *= ratio
    return sd


def _segment(box: _Box, ax, ay, bx, by, half) -> np.ndarray:
    """Signed distance (n, h, w) to a line segment a-b of half-thickness `half`."""
    pax, pay = box.x - _c(ax), box.y - _c(ay)
    bax, bay = _c(bx - ax), _c(by - ay)
    h = np.clip((pax * bax + pay * bay) / (bax * bax + bay * bay + 1e-9), 0.0, 1.0)
    dx, dy = pax - bax * h, pay - bay * h
    return np.sqrt(dx * dx + dy * dy) - _c(half)


def _face_sd(box: _Box, g) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Signed distance to the face outline (egg shape: narrower at the chin) and u, v."""
    v = (box.y - _c(g.cy)) / _c(g.b)                                       # (n, h, 1)
    dx = box.x - _c(g.cx)                                                    # (n, 1, w)
    half = np.where(dx < 0, _c(g.al), _c(g.ar))                              # (n, 1, w)
    width = half * (1.0 - _c(g.taper) * np.square(np.clip(v, 0.0, 1.0)))   # (n, h, w)
    u = dx / width
    r = np.sqrt(u * u + v * v)
    return (r - 1.0) * width, u, v


# --------------------------------------------------------------------------- parts

def _background(cv: _Canvas, g) -> None:
    shade = (1.06 - 0.06 * (cv.coords + 1.0)).astype(np.float32)     # lighter at the top
    cv.img[:] = g.bg[:, :, None, None] * shade[None, None, :, None]


def _hair_sd(box: _Box, g) -> np.ndarray:
    """Signed distance to the hair mass: a cap over the skull, hanging down to hair_bottom."""
    top = g.cy - g.b - g.hair_top
    side = g.a + g.hair_side
    centre = g.cy - 0.05
    cap = _ellipse(box, g.hx, centre, side, centre - top)
    dx = np.abs(box.x - _c(g.hx)) - _c(side)
    hang = np.maximum(dx, _c(centre) - box.y)                        # straight sides below the cap
    sd = np.minimum(cap, hang)
    sd = np.maximum(sd, box.y - _c(g.hair_bottom))
    if np.any(g.hair_bump > 0):                                      # curls: separable bumps
        sd += _c(g.hair_bump) * (box.wave_x * box.wave_y)
    return sd


def _hair_back(cv: _Canvas, g) -> None:
    """Hair behind the head (drawn before the face)."""
    side, bump = g.a + g.hair_side, g.hair_bump
    box = cv.box(g.cy - g.b - g.hair_top - bump, np.maximum(g.hair_bottom, g.cy) + bump,
                 g.hx - side - bump, g.hx + side + bump)
    if box is not None:
        cv.paint(box, cv.coverage(_hair_sd(box, g)), g.hair)


def _neck_and_shoulders(cv: _Canvas, g) -> None:
    half = 0.42 * g.a
    nx = 0.6 * g.cx
    box = cv.box(g.cy + 0.25, np.full_like(g.cy, 1.0), nx - half, nx + half)
    if box is not None:
        sd = np.maximum(np.abs(box.x - _c(nx)) - _c(half), _c(g.cy + 0.25) - box.y)
        cv.paint(box, cv.coverage(sd), 0.8 * g.skin)
    sx, sy, sa, sb = 0.3 * g.cx, np.full_like(g.cy, 1.32), np.full_like(g.cy, 0.98), np.full_like(g.cy, 0.52)
    box = cv.box(sy - sb, sy + sb, sx - sa, sx + sa)
    if box is not None:
        cv.paint(box, cv.coverage(_ellipse(box, sx, sy, sa, sb)), g.cloth)


def _ears(cv: _Canvas, g) -> None:
    """Ears at the face's sides; the one on the side away from the turn shows more."""
    ear_y, ear_h = g.ey + 0.09, np.full_like(g.cy, 0.11)
    for sign in (-1.0, 1.0):
        grow = np.clip(1.0 - sign * 0.6 * g.t, 0.2, 1.6)
        ew = 0.065 * grow
        ex = g.cx + sign * ((g.al if sign < 0 else g.ar) - 0.01)
        box = cv.box(ear_y - ear_h, ear_y + ear_h, ex - ew, ex + ew)
        if box is not None:
            cv.paint(box, cv.coverage(_ellipse(box, ex, ear_y, ew, ear_h)), 0.88 * g.skin)


def _face(cv: _Canvas, g) -> None:
    """Skin ellipse with soft shading towards the outline (light from the upper left)."""
    box = cv.box(g.cy - g.b, g.cy + g.b, g.cx - g.al, g.cx + g.ar)
    sd, u, v = _face_sd(box, g)
    r2 = u * u + v * v
    shade = 1.0 - 0.22 * np.clip((r2 - 0.5) * 2.0, 0.0, 1.0) - 0.04 * u
    colour = g.skin[:, :, None, None] * shade[:, None]
    cv.paint(box, cv.coverage(sd), colour)


def _beard(cv: _Canvas, g) -> None:
    """Beard over chin, jaw, sideburns and upper lip; alpha = beard value.

    Colour: the hair's, darker, and kept apart from the skin's brightness (_contrasting).
    """
    if not np.any(g.beard > 0):
        return
    top_mid, top_side = g.my - 0.085, g.ey + 0.10
    chin = g.cy + g.b * (1.0 + 0.035 / (np.minimum(g.al, g.ar) * (1.0 - g.taper)))  # widened outline's end
    box = cv.box(g.ey + 0.05, chin, g.cx - g.al - 0.035, g.cx + g.ar + 0.035)
    sd, _, _ = _face_sd(box, g)
    sd -= 0.035                                                      # stands off the jaw a little
    q = (box.x - _c(g.mx)) / _c(g.a)
    top = _c(top_mid) - _c(top_mid - top_side) * np.minimum(q * q, 1.0)
    sd = np.maximum(sd, top - box.y)
    alpha = cv.coverage(sd) * _c(g.beard)
    cv.paint(box, alpha, g.beard_colour)


def _age_marks(cv: _Canvas, g) -> None:
    """Forehead lines and nasolabial folds; opacity grows linearly with age."""
    strength = 0.85 * g.age
    if not np.any(strength > 0):
        return
    dark = 0.55 * g.skin
    fx = g.forehead_x
    half_len = 0.5 * g.a * (0.8 + 0.2 * np.abs(1.0 - np.abs(g.t)))
    for dy in (0.19, 0.26):
        ly = g.ey - dy
        box = cv.box(ly - 0.06, ly + 0.06, fx - half_len, fx + half_len)
        q = (box.x - _c(fx)) / _c(half_len)
        sd = np.maximum(np.abs(box.y - _c(ly) - 0.035 * q * q) - 0.022, np.abs(q) * _c(half_len) - _c(half_len))
        cv.paint(box, cv.coverage(sd) * _c(strength), dark)
    for sign in (-1.0, 1.0):
        ax, ay = g.n_tip_x + sign * (g.nw + 0.04), g.n_tip_y - 0.02
        bx, by = g.mx + sign * (g.mw0 + 0.08), g.my + 0.05          # independent of the smile
        box = cv.box(np.minimum(ay, by) - 0.02, np.maximum(ay, by) + 0.02,
                     np.minimum(ax, bx) - 0.02, np.maximum(ax, bx) + 0.02)
        sd = _segment(box, ax, ay, bx, by, np.full_like(ax, 0.02))
        cv.paint(box, cv.coverage(sd) * _c(strength), dark)


def _nose(cv: _Canvas, g) -> None:
    """Shadow line along the bridge and a darker, rounded base with nostrils."""
    shadow = 0.72 * g.skin
    ax, ay = g.n_top_x + 0.025, g.n_top_y
    bx, by = g.n_tip_x + 0.6 * g.nw, g.n_tip_y - 0.03
    box = cv.box(np.minimum(ay, by) - 0.018, np.maximum(ay, by) + 0.018,
                 np.minimum(ax, bx) - 0.018, np.maximum(ax, bx) + 0.018)
    sd = _segment(box, ax, ay, bx, by, np.full_like(ax, 0.018))
    cv.paint(box, cv.coverage(sd) * 0.7, shadow)
    base_h = np.full_like(g.nw, 0.04)
    box = cv.box(g.n_tip_y - base_h, g.n_tip_y + base_h, g.n_tip_x - g.nw, g.n_tip_x + g.nw)
    cv.paint(box, cv.coverage(_ellipse(box, g.n_tip_x, g.n_tip_y, g.nw, base_h)) * 0.8, shadow)
    r = np.full_like(g.nw, 0.02)
    for sign in (-1.0, 1.0):
        nx, ny = g.n_tip_x + sign * 0.45 * g.nw, g.n_tip_y + 0.012
        box = cv.box(ny - r, ny + r, nx - r, nx + r)
        cv.paint(box, cv.coverage(_ellipse(box, nx, ny, r, r)) * 0.8, 0.4 * g.skin)


def _mouth(cv: _Canvas, g) -> None:
    """Lips around a curved opening: corners up for a smile, down for a frown; open (dark, teeth) above 0.55."""
    lip = 0.03
    gap = 0.022 + 0.13 * g.open                                      # opening height at the centre
    bend = 0.12 * g.curve                                             # corners rise by `bend`
    box = cv.box(g.my - np.abs(bend) - lip - 0.02, g.my + np.abs(bend) + gap + lip,
                 g.mx - g.mw - lip, g.mx + g.mw + lip)
    q = (box.x - _c(g.mx)) / _c(g.mw)                                 # (n, 1, w), -1..1 across
    q2 = np.minimum(q * q, 1.0)
    top = _c(g.my) + _c(bend) * (0.35 - q2) - 0.011                  # (n, 1, w)
    bottom = top + _c(gap) * (1.0 - q2)
    ends = np.abs(q) * _c(g.mw) - _c(g.mw)
    inside = np.maximum(np.maximum(top - box.y, box.y - bottom), ends)  # (n, h, w)
    cv.paint(box, cv.coverage(inside - lip), g.lip)
    cv.paint(box, cv.coverage(inside.copy()), np.broadcast_to(_MOUTH_INSIDE, g.lip.shape))
    if np.any(g.open > 0):
        teeth = np.maximum(inside, box.y - (top + 0.4 * _c(gap)))
        cv.paint(box, cv.coverage(teeth) * _c(np.minimum(g.open * 3.0, 1.0)),
                 np.broadcast_to(_TEETH, g.lip.shape))


def _eye_centres(g):
    """(x, half-width) of the left and right eye, (N,) arrays each."""
    return tuple(g.eyes)


def _eyes(cv: _Canvas, g) -> None:
    """Eyebrow, lash line, white, iris and pupil of both eyes."""
    n = len(g.ey)
    white = np.broadcast_to(_WHITE, (n, 3))
    pupil = np.broadcast_to(_PUPIL, (n, 3))
    lash = 0.35 * g.skin
    for ex, ew in _eye_centres(g):
        # eyebrow: a thick arc, ends lower than the middle
        by, bw = g.ey - g.eh - 0.065, 1.2 * ew
        box = cv.box(by - 0.05, by + 0.08, ex - bw, ex + bw)
        q = (box.x - _c(ex)) / _c(bw)
        sd = np.maximum(np.abs(box.y - _c(by) - 0.035 * q * q) - 0.026, (np.abs(q) - 1.0) * _c(bw))
        cv.paint(box, cv.coverage(sd), g.brow)
        # lash line (slightly larger, raised ellipse), white, iris, pupil
        box = cv.box(g.ey - g.eh - 0.04, g.ey + g.eh + 0.02, ex - ew - 0.03, ex + ew + 0.03)
        cv.paint(box, cv.coverage(_ellipse(box, ex, g.ey - 0.012, ew + 0.018, g.eh + 0.02)), lash)
        eye = _ellipse(box, ex, g.ey, ew, g.eh)
        cv.paint(box, cv.coverage(eye.copy()), white)
        iris_r = 0.95 * g.eh
        iris = np.maximum(_ellipse(box, ex, g.ey, np.minimum(iris_r, ew), iris_r), eye)
        cv.paint(box, cv.coverage(iris), g.iris)
        pupil_r = 0.45 * g.eh
        cv.paint(box, cv.coverage(_ellipse(box, ex, g.ey, np.minimum(pupil_r, ew), pupil_r)), pupil)


def _hair_front(cv: _Canvas, g) -> None:
    """Hair over the forehead down to the style's hairline (fringe, side part, curtains)."""
    side, bump = g.a + g.hair_side, g.hair_bump
    reach = side + np.abs(g.forehead_x - g.hx)
    lowest = g.cy - g.hairline * g.b + np.abs(g.hair_slope) * reach + g.hair_curve * reach * reach
    box = cv.box(g.cy - g.b - g.hair_top - bump, np.minimum(lowest, g.hair_bottom + bump),
                 g.hx - side - bump, g.hx + side + bump)
    if box is None:
        return
    dx = box.x - _c(g.forehead_x)
    line = _c(g.cy - g.hairline * g.b) + _c(g.hair_slope) * dx + _c(g.hair_curve) * dx * dx
    sd = np.maximum(_hair_sd(box, g), box.y - line)
    cv.paint(box, cv.coverage(sd), g.hair)


_FRAME_HALF = 0.034   # half thickness of the eyeglasses' frame


def _lenses(g):
    """((x, half-width) left, (x, half-width) right, y, half-height) of the lenses, (N,) arrays."""
    (lx, lw), (rx, rw) = _eye_centres(g)
    lw, rw = lw + 0.06 * lw / g.eyes_w0, rw + 0.06 * rw / g.eyes_w0   # lenses foreshorten with the eyes
    squeeze = np.minimum(1.0, (rx - lx - 0.07) / (lw + rw))           # keep a bridge between them
    return (lx, lw * squeeze), (rx, rw * squeeze), g.ey + 0.005, g.eh + 0.07


def _eyeglasses(cv: _Canvas, g) -> None:
    """Dark frames around both eyes, a bridge and arms to the face's sides; alpha = eyeglasses value."""
    if not np.any(g.glasses > 0):
        return
    th = _FRAME_HALF
    n = len(g.ey)
    frame = np.broadcast_to(_FRAME, (n, 3))
    lens = np.broadcast_to(_LENS, (n, 3))
    (lx, lw), (rx, rw), gy, gh = _lenses(g)
    for ex, gw in ((lx, lw), (rx, rw)):
        box = cv.box(gy - gh - th, gy + gh + th, ex - gw - th, ex + gw + th)
        ring = _ellipse(box, ex, gy, gw, gh)
        cv.paint(box, cv.coverage(ring.copy()) * _c(0.18 * g.glasses), lens)
        np.abs(ring, out=ring)
        ring -= th
        cv.paint(box, cv.coverage(ring) * _c(g.glasses), frame)
    # bridge between the lenses and arms to the face outline, at the top of the frames
    arm_y = gy - 0.35 * gh
    for x0, x1 in ((lx + lw, rx - rw), (g.cx - 0.98 * g.al, lx - lw), (rx + rw, g.cx + 0.98 * g.ar)):
        box = cv.box(arm_y - th, arm_y + th, np.minimum(x0, x1), np.maximum(x0, x1))
        if box is None:
            continue
        sd = np.maximum(np.abs(box.y - _c(arm_y)) - 0.8 * th,
                        np.maximum(_c(x0) - box.x, box.x - _c(x1)))
        cv.paint(box, cv.coverage(sd) * _c(g.glasses), frame)


_PARTS = (_background, _hair_back, _neck_and_shoulders, _ears, _face, _beard, _age_marks,
          _nose, _mouth, _eyes, _hair_front, _eyeglasses)
