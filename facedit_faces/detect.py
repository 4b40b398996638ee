"""Face detection with five landmarks: MTCNN (Zhang et al. 2016) with the weights that the
facenet-pytorch wheel ships (pnet.pt, rnet.pt, onet.pt; nothing is downloaded).

Runs on CUDA when torch sees a GPU, else on the CPU. Small photos are upsampled before
detection (MTCNN misses faces that fill an image of less than ~160 pixels); large ones are
downscaled to MAX_DETECT_SIDE, which bounds the time one detection holds the detector (a
4096x4096 photo took seconds; faces narrower than about min_face_size x 4096 / 1280 = 64
pixels of such a photo are then missed). A caller waits for the detector at most its timeout.
"""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
from PIL import Image

from facedit_core.errors import DeadlineExceeded

MIN_DETECT_SIDE = 256   # photos whose longer side is smaller are upsampled to about this
MAX_DETECT_SIDE = 1280  # photos whose longer side is larger are downscaled to this for detection


@dataclasses.dataclass(frozen=True)
class Detection:
    box: np.ndarray        # (4,) float32 x0, y0, x1, y1 in photo pixels
    score: float           # MTCNN's face probability
    landmarks: np.ndarray  # (5, 2) float32 (x, y): eye, eye, nose, mouth corner, mouth corner


class FaceDetector:
    """Every face in a photo, best first (highest score)."""

    def __init__(self, threads: int = 1, min_face_size: int = 20, min_score: float = 0.9):
        import torch
        from facenet_pytorch import MTCNN

        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            torch.set_num_threads(max(1, threads))
        self.mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, select_largest=False,
                           post_process=False, device=self.device)
        self.min_score = min_score
        self._lock = threading.Lock()  # one detection at a time per process (torch module state)

    def detect(self, photo: np.ndarray, timeout_s: float | None = None) -> list[Detection]:
        """photo (H, W, 3) uint8 RGB -> detections with score >= min_score, best first, in photo
        pixels. timeout_s: how long to wait for the detector (DeadlineExceeded after it)."""
        h, w = photo.shape[:2]
        factor = min(max(1.0, MIN_DETECT_SIDE / max(h, w)), MAX_DETECT_SIDE / max(h, w))
        image = Image.fromarray(photo)
        if factor != 1.0:
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            image = image.resize(size, Image.Resampling.BICUBIC if factor > 1 else Image.Resampling.BOX)
        if not self._lock.acquire(timeout=-1 if timeout_s is None else max(timeout_s, 0.0)):
            raise DeadlineExceeded("face detection is busy with other photos; no turn before the deadline")
        try:
            with self._torch.inference_mode():
                boxes, probs, points = self.mtcnn.detect(image, landmarks=True)
        finally:
            self._lock.release()
        if boxes is None:
            return []
        sx, sy = w / image.width, h / image.height
        scale = np.array([sx, sy], np.float32)
        found = [Detection(box=(b.reshape(2, 2) * scale).reshape(4).astype(np.float32), score=float(p),
                           landmarks=(pts * scale).astype(np.float32))
                 for b, p, pts in zip(boxes, probs, points) if p >= self.min_score]
        return sorted(found, key=lambda d: -d.score)
