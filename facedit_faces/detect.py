"""Face detection with five landmarks: MTCNN (Zhang et al. 2016) with the weights that the
facenet-pytorch wheel ships, exported to ONNX by `make setup` (training/third_party/mtcnn_onnx.py)
into model_store/third_party/ with mtcnn.json listing each file's sha256; run on ONNX Runtime by
facedit_faces/mtcnn.py (a numpy port of facenet-pytorch's pipeline, no torch). Nothing is downloaded.

Runs on CUDA when ONNX Runtime has it, else on the CPU. Small photos are upsampled before
detection (MTCNN misses faces that fill an image of less than ~160 pixels); large ones are
downscaled to MAX_DETECT_SIDE, which bounds the time one detection holds the detector (a
4096x4096 photo took seconds; faces narrower than about min_face_size x 4096 / 1280 = 64
pixels of such a photo are then missed). A caller waits for the detector at most its timeout.
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from facedit_core.errors import DeadlineExceeded
from facedit_core.pack import PackError, default_store, sha256
from facedit_faces.mtcnn import Mtcnn

MIN_DETECT_SIDE = 256   # photos whose longer side is smaller are upsampled to about this
MAX_DETECT_SIDE = 1280  # photos whose longer side is larger are downscaled to this for detection
TURN_PROBE_SIDE = 640   # turned copies of a photo without a face are probed at most this large
MANIFEST = "mtcnn.json"  # in the third-party folder: {"format", "source", "nets": {name: {"path", "sha256"}}}
FORMAT = "facedit-mtcnn/1"
NETS = ("pnet", "rnet", "onet")


@dataclasses.dataclass(frozen=True)
class Detection:
    box: np.ndarray        # (4,) float32 x0, y0, x1, y1 in photo pixels, clipped to the photo (0..width, 0..height)
    score: float           # MTCNN's face probability
    landmarks: np.ndarray  # (5, 2) float32 (x, y): eye, eye, nose, mouth corner, mouth corner


def default_dir() -> Path:
    """Where `make setup` builds the networks: <model store>/third_party."""
    return default_store() / "third_party"


def network_files(folder: Path) -> dict[str, Path]:
    """The three ONNX files that `folder`/mtcnn.json lists, each checked against its sha256 there:
    {"pnet": path, "rnet": path, "onet": path}. PackError saying what is wrong and what to run."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise PackError(f"{manifest_path} is missing: build the face detector's networks with `make setup` "
                        "(python -m training.third_party)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT or set(manifest.get("nets", {})) != set(NETS):
        raise PackError(f"{manifest_path}: format {manifest.get('format')!r} with nets "
                        f"{sorted(manifest.get('nets', {}))}, this build reads {FORMAT!r} with {list(NETS)}")
    files, problems = {}, []
    for name in NETS:
        entry = manifest["nets"][name]
        path = folder / entry["path"]
        if not path.exists():
            problems.append(f"{path} is listed in {MANIFEST} but missing")
        elif (digest := sha256(path)) != entry["sha256"]:
            problems.append(f"{path}: sha256 {digest[:12]}... does not match {MANIFEST} ({entry['sha256'][:12]}...)")
        files[name] = path
    if problems:
        raise PackError("face detector: " + "; ".join(problems) + "; rebuild with `make setup`")
    return files


class FaceDetector:
    """Every face in a photo, best first (highest score)."""

    def __init__(self, threads: int = 1, min_face_size: int = 20, min_score: float = 0.9,
                 folder: Path | None = None):
        """folder: where mtcnn.json and the networks are (default: <model store>/third_party);
        PackError when they are missing or do not match their sha256."""
        files = network_files(Path(folder) if folder is not None else default_dir())
        self.mtcnn = Mtcnn(files["pnet"], files["rnet"], files["onet"], threads=max(1, threads),
                           min_face_size=min_face_size)
        self.min_score = min_score
        self._lock = threading.Lock()  # one detection at a time per process: bounds the cores one photo takes

    def detect(self, photo: np.ndarray, timeout_s: float | None = None,
               min_face: float | None = None) -> list[Detection]:
        """photo (H, W, 3) uint8 RGB -> detections with score >= min_score, best first, in photo
        pixels. timeout_s: how long to wait for the detector (DeadlineExceeded after it). min_face: look
        only for faces about this many photo pixels wide or more (default: min_face_size after the
        photo is resized for detection); a face expected at a known size is found faster."""
        h, w = photo.shape[:2]
        factor = min(max(1.0, MIN_DETECT_SIDE / max(h, w)), MAX_DETECT_SIDE / max(h, w))
        image = Image.fromarray(photo)
        if factor != 1.0:
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            image = image.resize(size, Image.Resampling.BICUBIC if factor > 1 else Image.Resampling.BOX)
        if not self._lock.acquire(timeout=-1 if timeout_s is None else max(timeout_s, 0.0)):
            raise DeadlineExceeded("face detection is busy with other photos; no turn before the deadline")
        try:
            smallest = None if min_face is None else max(min_face * image.width / w, self.mtcnn.min_face_size)
            boxes, probs, points = self.mtcnn.detect(np.asarray(image), smallest)
        finally:
            self._lock.release()
        sx, sy = w / image.width, h / image.height
        scale = np.array([sx, sy], np.float32)
        limit = np.array([w, h], np.float32)
        # boxes of faces cut off by the photo's edge are clipped to it; the landmarks stay where MTCNN put
        # them (alignment needs them even outside the photo)
        found = [Detection(box=np.clip(b.reshape(2, 2) * scale, 0, limit).reshape(4).astype(np.float32),
                           score=float(p), landmarks=(pts * scale).astype(np.float32))
                 for b, p, pts in zip(boxes, probs, points) if p >= self.min_score]
        return sorted(found, key=lambda d: -d.score)

    def turns_with_faces(self, photo: np.ndarray, timeout_s: float | None = None) -> list[int] | None:
        """For a photo in which detect() found no face: the clockwise turns (90, 180, 270 degrees) of it in
        which a face is found, best score first: a photo stored sideways without an EXIF orientation tag.
        Probed on a copy of at most TURN_PROBE_SIDE pixels a side (about 0.2 s for three turns of a 512-pixel
        photo on one core). None when the detector was too busy to probe all three within timeout_s."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        image = Image.fromarray(photo)
        factor = TURN_PROBE_SIDE / max(image.size)
        if factor < 1:
            image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))),
                                 Image.Resampling.BOX)
        small, best = np.asarray(image), {}
        for turn, k in ((90, -1), (180, 2), (270, 1)):  # np.rot90 turns counter-clockwise for k > 0
            try:
                found = self.detect(np.ascontiguousarray(np.rot90(small, k)),
                                    None if deadline is None else deadline - time.monotonic())
            except DeadlineExceeded:
                return None
            if found:
                best[turn] = found[0].score
        return sorted(best, key=lambda t: -best[t])
