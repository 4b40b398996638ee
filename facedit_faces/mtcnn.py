"""MTCNN (Zhang et al. 2016) on ONNX Runtime: a numpy port of facenet-pytorch 2.6.0's `detect_face`
(facenet_pytorch/models/utils/detect_face.py) around its three networks exported to ONNX
(training/third_party/mtcnn_onnx.py, `make setup`). No torch.

The port keeps facenet-pytorch's arithmetic: float32 throughout; the same image pyramid (scales
12 / min_face_size * 0.709^k while the shorter side stays >= 12 px); `interpolate(mode="area")` as
exact window sums over an integral image (the pixels are integers, so the float32 sums are exact)
divided by the window's height, then its width, as torch does; torchvision's NMS (areas without +1,
stable descending sort, suppress IoU > threshold) for the first two stages and facenet-pytorch's numpy
"Min" NMS for the last. One deliberate difference: a box that lies wholly outside the image is dropped
before R-Net / O-Net (facenet-pytorch would misalign its crops with its boxes or fail on it).

Coordinates are pixels of the image given, x right and y down, as facenet-pytorch returns them.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime as ort  # after the telemetry setting

THRESHOLDS = (0.6, 0.7, 0.7)  # face probability to pass P-Net, R-Net, O-Net
FACTOR = 0.709                # pyramid scale step
CHUNK = 512                   # R-Net / O-Net crops per network call (facenet-pytorch's fixed_batch_process)


def session(path: Path, threads: int) -> ort.InferenceSession:
    """An ONNX Runtime session on CUDA when this build has it, else the CPU with `threads` intra-op
    threads (0 = one per core), without spinning."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


# --------------------------------------------------------------------------- resampling

def integral_image(pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H + 1, W + 1, 3) sums of every top-left rectangle, exact: int32 while
    H * W * 255 fits (any photo of up to 2900 x 2900 pixels), else int64."""
    h, w, c = pixels.shape
    dtype = np.int32 if h * w * 255 < 2**31 else np.int64
    ii = np.zeros((h + 1, w + 1, c), dtype)
    np.cumsum(np.cumsum(pixels, axis=0, dtype=dtype), axis=1, out=ii[1:, 1:])
    return ii


def area_windows(start: np.ndarray, stop: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """torch's adaptive average pooling windows: input spans [start, stop) (K,) int -> `size` output
    cells each; returns (first, end) (K, size) int64 absolute indices, end exclusive."""
    n = (stop - start)[:, None].astype(np.int64)
    i = np.arange(size, dtype=np.int64)[None, :]
    return start[:, None] + i * n // size, start[:, None] + -((-(i + 1) * n) // size)


def area_resample(ii: np.ndarray, rows: tuple[np.ndarray, np.ndarray],
                  cols: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Mean of every window (F.interpolate(mode="area") on a channels-last image): rows, cols from
    area_windows, (K, oh) and (K, ow) -> (K, oh, ow, 3) float32."""
    r0, r1 = rows[0][:, :, None], rows[1][:, :, None]
    c0, c1 = cols[0][:, None, :], cols[1][:, None, :]
    sums = (ii[r1, c1] - ii[r0, c1] - ii[r1, c0] + ii[r0, c0]).astype(np.float32)
    return sums / (r1 - r0).astype(np.float32)[..., None] / (c1 - c0).astype(np.float32)[..., None]  # torch's order


def area_level(ii: np.ndarray, height: int, width: int) -> np.ndarray:
    """The whole image resampled to (height, width), the numbers of area_resample computed one axis at a
    time (faster): (1, height, width, 3) float32."""
    (r0,), (r1,) = area_windows(np.array([0]), np.array([ii.shape[0] - 1]), height)
    (c0,), (c1,) = area_windows(np.array([0]), np.array([ii.shape[1] - 1]), width)
    rows = ii[r1] - ii[r0]  # (height, W + 1, 3): sums over each row window
    sums = (rows[:, c1] - rows[:, c0]).astype(np.float32)
    return (sums / (r1 - r0).astype(np.float32)[:, None, None] / (c1 - c0).astype(np.float32)[None, :, None])[None]


def normalise(pixels: np.ndarray) -> np.ndarray:
    """(K, h, w, 3) float32 pixel values -> (K, 3, h, w) float32 network input, MTCNN's scaling."""
    return np.ascontiguousarray(((pixels - np.float32(127.5)) * np.float32(0.0078125)).transpose(0, 3, 1, 2))


# --------------------------------------------------------------------------- boxes

def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """torchvision.ops.nms: boxes (N, 4) float32 x0, y0, x1, y1; scores (N,) float32 -> kept indices,
    best first. A box is dropped when its IoU with a better kept box exceeds `threshold`."""
    x0, y0, x1, y1 = boxes.T
    areas = (x1 - x0) * (y1 - y0)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.float32(0), np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        h = np.maximum(np.float32(0), np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > np.float32(threshold))]
    return np.array(keep, np.int64)


def nms_min(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """facenet-pytorch's nms_numpy(..., "Min") of its last stage: overlap = intersection / the smaller
    area, areas with +1; boxes (N, 4) float32, scores (N,) float32 -> kept indices, best first."""
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = np.argsort(scores)  # ascending, numpy's default sort as in facenet-pytorch; the best is last
    keep = []
    while order.size:
        i, rest = order[-1], order[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        overlap = w * h / np.minimum(area[i], area[rest])
        order = rest[overlap <= threshold]
    return np.array(keep, np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """rerec: each box (N, >=4) float32 made a square of its longer side about its centre (a copy)."""
    out = boxes.copy()
    h, w = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * np.float32(0.5) - side * np.float32(0.5)
    out[:, 1] = boxes[:, 1] + h * np.float32(0.5) - side * np.float32(0.5)
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """bbreg: boxes (N, >=4) float32 moved by the network's regression (N, 4), in units of the box's
    size + 1 (a copy)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + np.float32(1)
    h = boxes[:, 3] - boxes[:, 1] + np.float32(1)
    out[:, 0] = boxes[:, 0] + reg[:, 0] * w
    out[:, 1] = boxes[:, 1] + reg[:, 1] * h
    out[:, 2] = boxes[:, 2] + reg[:, 2] * w
    out[:, 3] = boxes[:, 3] + reg[:, 3] * h
    return out


def crop_windows(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """pad: the image rows and columns each box covers, boxes (N, >=4) float32 -> first (N, 2) and end
    (N, 2) int64 as (row, column), end exclusive, clipped to the image; rows with first >= end are
    boxes outside the image."""
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], width), np.minimum(b[:, 3], height)
    return np.stack([y - 1, x - 1], 1), np.stack([ey, ex], 1)


# --------------------------------------------------------------------------- the detector

class Mtcnn:
    """The three networks (ONNX files) and facenet-pytorch's pipeline around them."""

    def __init__(self, pnet: Path, rnet: Path, onet: Path, threads: int = 1, min_face_size: int = 20):
        self.pnet, self.rnet, self.onet = (session(p, threads) for p in (pnet, rnet, onet))
        self.min_face_size = min_face_size

    def scales(self, height: int, width: int, min_face_size: float | None = None) -> list[float]:
        """The pyramid: image scale factors, largest first (faces down to min_face_size pixels, default the
        detector's)."""
        m = 12.0 / (min_face_size or self.min_face_size)
        side, scale, out = min(height, width) * m, m, []
        while side >= 12:
            out.append(scale)
            scale, side = scale * FACTOR, side * FACTOR
        return out

    def proposals(self, ii: np.ndarray, height: int, width: int, min_face_size: float | None = None) -> np.ndarray:
        """Stage 1 (P-Net over the pyramid) -> candidate boxes (N, 5) float32: x0, y0, x1, y1, score."""
        found = []
        for scale in self.scales(height, width, min_face_size):
            oh, ow = int(height * scale + 1), int(width * scale + 1)
            reg, prob = self.pnet.run(None, {"image": normalise(area_level(ii, oh, ow))})
            mask = prob[0, 1] >= np.float32(THRESHOLDS[0])
            ys, xs = np.nonzero(mask)
            cells = np.stack([xs, ys], 1).astype(np.float32)
            s = np.float32(scale)
            boxes = np.concatenate([np.floor((2 * cells + 1) / s), np.floor((2 * cells + 12) / s),
                                    prob[0, 1][mask][:, None], reg[0][:, mask].T], 1).astype(np.float32)
            found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
        boxes = np.concatenate(found) if found else np.zeros((0, 9), np.float32)
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)]
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        moved = np.stack([boxes[:, 0] + boxes[:, 5] * w, boxes[:, 1] + boxes[:, 6] * h,
                          boxes[:, 2] + boxes[:, 7] * w, boxes[:, 3] + boxes[:, 8] * h, boxes[:, 4]], 1)
        return square(moved)

    def crops(self, ii: np.ndarray, boxes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The image under each box resampled to size x size -> (network input (K, 3, size, size) float32,
        the indices (K,) of the boxes that overlap the image)."""
        height, width = ii.shape[0] - 1, ii.shape[1] - 1
        first, end = crop_windows(boxes, width, height)
        inside = np.nonzero((end > first).all(1))[0]
        first, end = first[inside], end[inside]
        pixels = area_resample(ii, area_windows(first[:, 0], end[:, 0], size),
                               area_windows(first[:, 1], end[:, 1], size))
        return normalise(pixels), inside

    def run(self, net: ort.InferenceSession, images: np.ndarray) -> list[np.ndarray]:
        """R-Net or O-Net over (K, 3, s, s) in chunks of CHUNK -> its outputs, concatenated."""
        outs = [net.run(None, {"image": images[i:i + CHUNK]}) for i in range(0, len(images), CHUNK)]
        return [np.concatenate(o) for o in zip(*outs)]

    def detect(self, pixels: np.ndarray,
               min_face_size: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """pixels (H, W, 3) uint8 RGB -> boxes (N, 4) float32 x0, y0, x1, y1, probabilities (N,) float32,
        landmarks (N, 5, 2) float32 (x, y), in pixels; N may be 0. The order is facenet-pytorch's.
        min_face_size: the smallest face looked for, in pixels (default the detector's, 20); a larger one
        skips the pyramid's largest, costliest levels."""
        height, width = pixels.shape[:2]
        ii = integral_image(pixels)
        boxes = self.proposals(ii, height, width, min_face_size)
        points = np.zeros((0, 5, 2), np.float32)
        if len(boxes):  # stage 2: R-Net refines and rejects
            images, inside = self.crops(ii, boxes, 24)
            boxes = boxes[inside]
            reg, prob = self.run(self.rnet, images)
            ok = prob[:, 1] > np.float32(THRESHOLDS[1])
            boxes = np.concatenate([boxes[ok, :4], prob[ok, 1:2]], 1)
            reg = reg[ok]
            keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
            boxes = square(regress(boxes[keep], reg[keep]))
        if len(boxes):  # stage 3: O-Net refines, rejects and places the landmarks
            images, inside = self.crops(ii, boxes, 48)
            boxes = boxes[inside]
            reg, marks, prob = self.run(self.onet, images)
            ok = prob[:, 1] > np.float32(THRESHOLDS[2])
            boxes = np.concatenate([boxes[ok, :4], prob[ok, 1:2]], 1)
            reg, marks = reg[ok], marks[ok]
            w = (boxes[:, 2] - boxes[:, 0] + np.float32(1))[:, None]
            h = (boxes[:, 3] - boxes[:, 1] + np.float32(1))[:, None]
            xs = w * marks[:, :5] + boxes[:, 0:1] - np.float32(1)
            ys = h * marks[:, 5:] + boxes[:, 1:2] - np.float32(1)
            points = np.stack([xs, ys], 2)
            boxes = regress(boxes, reg)
            keep = nms_min(boxes[:, :4], boxes[:, 4], 0.7)
            boxes, points = boxes[keep], points[keep]
        return boxes[:, :4].astype(np.float32), boxes[:, 4].astype(np.float32), points.astype(np.float32)
