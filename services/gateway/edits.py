"""What the gateway's RPCs share about an edit: applying a composed edit to latents, and its quality
figures (EditQuality)."""
from __future__ import annotations

import warnings

import numpy as np

from facedit.v1 import directions_pb2, gateway_pb2
from services.common.tensors import from_tensor


def apply_composed(z: np.ndarray, composed: directions_pb2.ComposeResponse, scale) -> np.ndarray:
    """z (N, D) -> edited (N, D): z + scale * delta, and the averaging text edits' pull
    z' = (1 - w) z + pull with (pull, w) scaled too (everything is linear in the strength)."""
    scale = np.asarray(scale, np.float32).reshape(-1, 1)
    out = z + scale * from_tensor(composed.delta, "delta")[None]
    if composed.pull_weight:
        out = out + scale * (from_tensor(composed.pull, "pull")[None] - composed.pull_weight * z)
    return out.astype(np.float32)


def nan_mean(x: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over `axis` ignoring NaN; NaN where there is nothing to average."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.asarray(x, np.float64), axis=axis)


def quality(composed, index: dict[str, int], before: np.ndarray, after: np.ndarray) -> list:
    """EditQuality per composed direction; scores (N, A) before/after, averaged over the N faces
    (NaN when N is 0 or the attribute is not scored)."""
    out = []
    for e in composed.edits:
        d, i = e.direction, index.get(e.direction.attribute)
        out.append(gateway_pb2.EditQuality(
            direction_id=d.id, attribute=d.attribute, method=d.method, strength=e.strength,
            score_before=float(nan_mean(before[:, i])) if i is not None else float("nan"),
            score_after=float(nan_mean(after[:, i])) if i is not None else float("nan"),
            projected_norm=e.projected_norm, strength_min=d.strength_min, strength_max=d.strength_max))
    return out


def pose_warnings(composed, pose_attributes, paste: int) -> list[str]:
    """Warnings for a photo answer: edits of attributes that turn or tilt the head (the pack's
    pose_attributes), pasted into the photo as a change (PASTE_MODE_DELTA, the default), show the face
    twice: the photo's own face stays under the turned rendering's change."""
    if paste == gateway_pb2.PASTE_MODE_REPLACE:
        return []
    posed = sorted({e.direction.attribute for e in composed.edits
                    if e.direction.attribute in set(pose_attributes) and e.strength != 0})
    return [f"{a} turns or tilts the head: pasted into the photo as a change (paste mode DELTA) the photo's own "
            f"face shows through twice; for pose edits of a photo ask paste PASTE_MODE_REPLACE with fidelity "
            f"FIDELITY_FAITHFUL (the rendered face, inverted to look like the person)" for a in posed]
