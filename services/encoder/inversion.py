"""The encoder's faithful inversion (fidelity FAITHFUL): for packs whose manifest lists `inversion` and
`generator_modulated`, each aligned face is optimised from the encoder's latent by
facedit_core/inversion.py, with the gradients of the pack's inversion graph run here on ONNX Runtime.

One inversion runs at a time per pack and process (each step already uses the session's threads); others wait
for their turn up to their deadline. The answer per face: z, the generator modulation to render it
with (the generator service's GenerateImagesRequest.modulations) and a report (identity and pixel error
before and after, steps, seconds).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from typing import Callable

import numpy as np

from facedit.v1 import common_pb2
from facedit_core.errors import DeadlineExceeded, InvalidArgument
from facedit_core.inversion import Settings, graph_step, invert, modulated_rows
from facedit_core.pack import Pack
from services.common import onnx, tracing

ARTEFACTS = ("inversion", "generator_modulated")
MAX_FAITHFUL_IMAGES = 4  # per EncodeImages call with fidelity FAITHFUL (seconds each)

Embed = Callable[[np.ndarray, float], np.ndarray]  # (N, R, R, 3) uint8, timeout_s -> (N, 512) unit float32


@dataclasses.dataclass(frozen=True)
class Result:
    z: np.ndarray           # (D,) float32
    modulation: np.ndarray  # (M,) float32
    report: common_pb2.InversionReport


def available(pack: Pack) -> bool:
    return all(a in pack.manifest["artefacts"] for a in ARTEFACTS)


def require(pack: Pack, inverter: "Inverter | None") -> "Inverter":
    if inverter is None:
        raise InvalidArgument(f"pack {pack.name!r} has no faithful inversion (its manifest lists no "
                              f"{' and '.join(ARTEFACTS)}); use fidelity FAST")
    return inverter


class Inverter:
    def __init__(self, pack: Pack, threading_: onnx.Threading, embed: Embed, settings: Settings = Settings()):
        """embed: FaceNet on faces at the pack's resolution (the ISTRC models' when the pack has them)."""
        self.pack, self.embed, self.settings = pack, embed, settings
        self.modulation_size = int(pack.manifest["artefacts"]["generator_modulated"]["modulation_size"])
        self._step = graph_step(onnx.session(pack.artefact("inversion"), threading_))
        self.renderer = onnx.session(pack.artefact("generator_modulated"), threading_)
        self._turn = threading.Lock()

    def render(self, z: np.ndarray, modulation: np.ndarray) -> np.ndarray:
        """z (N, D), modulation (N, M) -> (N, R, R, 3) uint8."""
        return self.renderer.run(None, {"z_modulation": modulated_rows(z, modulation)})[0]

    def invert(self, crops: np.ndarray, z0: np.ndarray, deadline: float) -> list[Result]:
        """crops (N, R, R, 3) uint8 aligned faces, z0 (N, D) their encoder latents; deadline in
        time.monotonic(). One face after the other; DeadlineExceeded when they cannot all finish."""
        if not self._turn.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise DeadlineExceeded("faithful inversion is busy with other faces; no turn before the deadline "
                                   "(give the call a longer deadline, or use fidelity FAST)")
        try:
            return [self._one(c, z, deadline) for c, z in zip(crops, z0)]
        finally:
            self._turn.release()

    def _one(self, crop: np.ndarray, z0: np.ndarray, deadline: float) -> Result:
        with tracing.step("invert"):
            target_embedding = self.embed(crop[None], max(deadline - time.monotonic(), 0.0))[0]
            result = invert(z0, self.modulation_size, crop, target_embedding, self._step, self.settings, deadline)
            zero = np.zeros(self.modulation_size, np.float32)
            before, after = self.render(np.stack([z0, result.z]), np.stack([zero, result.modulation]))
            e = self.embed(np.stack([before, after]), max(deadline - time.monotonic(), 0.0))
        mae = [float(np.abs(x.astype(np.int16) - crop).mean()) for x in (before, after)]
        report = common_pb2.InversionReport(
            identity_before=float(e[0] @ target_embedding), identity_after=float(e[1] @ target_embedding),
            pixel_error_before=mae[0], pixel_error_after=mae[1], steps=result.steps, seconds=result.seconds)
        return Result(z=result.z, modulation=result.modulation, report=report)
