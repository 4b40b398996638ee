"""Measured attributes of generated faces, for packs without labelled data (digiface64).

Every annotator is a plain measurement on the face's five MTCNN landmarks (facenet-pytorch's
MTCNN, MIT licence, weights in its wheel) and its pixels, not a learned guess:

| attribute  | measurement (landmarks in crop pixels; d = distance between the eyes)            |
|------------|----------------------------------------------------------------------------------|
| yaw        | horizontal offset of the nose tip from the eyes' midpoint, / d (+ = nose towards  |
|            | the image's right)                                                               |
| roll       | angle of the line through the eyes, degrees (+ = clockwise in the image)         |
| smile      | distance between the mouth corners / d (a smile widens the mouth)                |
| mouth_open | darkness inside the mouth relative to the skin: 1 - (10th percentile luminance of |
|            | the band between the mouth corners) / (mean luminance of the cheek patches)       |
| skin_tone  | mean luminance (Rec. 601, [0, 1]) of two cheek patches (+ = lighter; lighting     |
|            | counts too: a lit dark face and a shadowed light face can score alike)           |

Checks of each measurement are in tests/unit/test_faces.py (flips negate yaw, rotations shift
roll by the rotation) and in the model card (extremes of every attribute, looked at by eye).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from facedit_core import images

ATTRIBUTES = ("yaw", "roll", "smile", "mouth_open", "skin_tone")
# attributes that turn or tilt the head: pasted into a photo as a change (PASTE_MODE_DELTA) they show the face
# twice (the manifest's alignment.pose_attributes; the gateway warns about them)
POSE = ("yaw", "roll")


def luminance(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> (...) float32 luminance in [0, 1] (facedit_core.images.LUMA, Rec. 601)."""
    return images.luminance(pixels) / 255.0


def _patch(lum: np.ndarray, centre: np.ndarray, half: float) -> np.ndarray:
    h, w = lum.shape
    x0, x1 = int(max(0, round(centre[0] - half))), int(min(w, round(centre[0] + half) + 1))
    y0, y1 = int(max(0, round(centre[1] - half))), int(min(h, round(centre[1] + half) + 1))
    return lum[y0:y1, x0:x1]


def measure(pixels: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """One face: pixels (R, R, 3) uint8, landmarks (5, 2) in the same pixels ->
    values (len(ATTRIBUTES),) float32 in the order of ATTRIBUTES."""
    eye_l, eye_r, nose, mouth_l, mouth_r = np.asarray(landmarks, np.float64)
    eyes = (eye_l + eye_r) / 2
    axis = eye_r - eye_l
    d = float(np.linalg.norm(axis)) or 1e-6
    ux = axis / d                       # along the eyes
    uy = np.array([-ux[1], ux[0]])      # down the face
    yaw = float((nose - eyes) @ ux) / d
    roll = float(np.degrees(np.arctan2(axis[1], axis[0])))
    smile = float(np.linalg.norm(mouth_r - mouth_l)) / d
    lum = luminance(pixels)
    # cheeks: between each eye and its mouth corner, pushed outwards
    cheeks = [(eye_l + mouth_l) / 2 - 0.15 * d * ux, (eye_r + mouth_r) / 2 + 0.15 * d * ux]
    skin = np.concatenate([_patch(lum, c, 0.12 * d).ravel() for c in cheeks])
    skin_tone = float(skin.mean()) if skin.size else float("nan")
    # mouth band: sample points between the corners, a little above and below the line
    mouth = (mouth_l + mouth_r) / 2
    ts = np.linspace(-0.35, 0.35, 9)
    vs = np.linspace(-0.12, 0.12, 5)
    pts = np.array([mouth + t * (mouth_r - mouth_l) + v * d * uy for t in ts for v in vs])
    h, w = lum.shape
    xi = np.clip(np.round(pts[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.round(pts[:, 1]).astype(int), 0, h - 1)
    band = lum[yi, xi]
    mouth_open = 1.0 - float(np.percentile(band, 10)) / max(skin_tone, 1e-3)
    return np.array([yaw, roll, smile, mouth_open, skin_tone], np.float32)


def regions(template: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """The alignment template (5, 2) (eye, eye, nose, mouth corner, mouth corner) -> (size, size)
    bool masks "mouth", "upper_lip" and "face" in crop pixels (pixel centres at integers): an
    ellipse around the mouth corners, the band between the nose tip and the mouth, an ellipse around eyes and mouth."""
    eye_l, eye_r, nose, mouth_l, mouth_r = np.asarray(template, np.float64)
    d = float(np.linalg.norm(eye_r - eye_l))
    w = float(np.linalg.norm(mouth_r - mouth_l))
    mouth = (mouth_l + mouth_r) / 2
    eyes = (eye_l + eye_r) / 2
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    centre = (eyes + mouth) / 2
    drop = mouth[1] - nose[1]
    return {
        "mouth": ((x - mouth[0]) / (0.65 * w)) ** 2 + ((y - mouth[1]) / (0.3 * d)) ** 2 <= 1,
        "upper_lip": (np.abs(x - mouth[0]) <= 0.35 * d) & (y >= nose[1] + 0.1 * drop) & (y <= nose[1] + 0.66 * drop),
        "face": ((x - centre[0]) / d) ** 2 + ((y - centre[1]) / (1.3 * d)) ** 2 <= 1,
    }


def detect_and_measure(detector, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces (N, R, R, 3) uint8 -> (found (N,) bool, landmarks (N, 5, 2), values (N, A)).

    `detector` is a facedit_faces.detect.FaceDetector; the best detection of each face is used.
    Faces without a detection get found=False and NaN values.
    """
    n = len(pixels)
    found = np.zeros(n, bool)
    landmarks = np.full((n, 5, 2), np.nan, np.float32)
    values = np.full((n, len(ATTRIBUTES)), np.nan, np.float32)
    for i, p in enumerate(pixels):
        hits = detector.detect(p)
        if hits:
            found[i], landmarks[i] = True, hits[0].landmarks
            values[i] = measure(p, hits[0].landmarks)
    return found, landmarks, values


def rotate(pixels: np.ndarray, degrees: float) -> np.ndarray:
    """(R, R, 3) uint8 rotated about its centre (counter-clockwise for positive degrees)."""
    return np.asarray(Image.fromarray(pixels).rotate(degrees, resample=Image.Resampling.BICUBIC))
