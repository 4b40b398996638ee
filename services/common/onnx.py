"""ONNX Runtime sessions: the CUDA execution provider when present, else CPU.

Threading (`Threading`, from the --threads / --inter-op-threads / --spinning flags of
the ONNX services): intra-op threads split one model call; the graphs here are a
chain of convolutions, so inter-op parallelism has nothing to overlap and defaults
to 1. Spinning is off by default: a spinning intra-op thread busy-waits for work
after each call, which on a small machine shared by several services takes the
cores that gRPC and the other services need (docs/performance.md has the measurement).

`Model.run` uses IO binding on the CUDA provider (the input is copied to the device
once and the output allocated there and copied back once, with no intermediate host
buffers); on the CPU provider plain `run` measured the same or faster, so IO binding
is off there unless asked for (`--io-binding on`).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime as ort  # noqa: E402

from services.common.batcher import DynamicBatcher  # noqa: E402

IO_BINDING = ("auto", "on", "off")


def providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always last."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


@dataclasses.dataclass(frozen=True)
class Threading:
    """intra_op: threads per model call (0 = one per core); inter_op: threads running
    independent graph nodes at once; spinning: idle intra-op threads busy-wait."""
    intra_op: int = 0
    inter_op: int = 1
    spinning: bool = False

    def __post_init__(self):
        if self.intra_op < 0 or self.inter_op < 0:
            raise ValueError("thread counts must be >= 0 (0 = ONNX Runtime's choice)")

    def shared(self, workers: int) -> "Threading":
        """The threading of one of `workers` model calls running at once: the intra-op threads of a
        lone call (0 = one per usable core) divided among them, at least 1 each."""
        cores = self.intra_op or len(os.sched_getaffinity(0))
        return dataclasses.replace(self, intra_op=max(1, cores // workers))

    @classmethod
    def from_flags(cls, args) -> "Threading":
        """From the flags of services.common.config.add_batching_flags."""
        return cls(args.threads, args.inter_op_threads, args.spinning)


def session(path: Path, threading: Threading = Threading()) -> ort.InferenceSession:
    """A session for `path` on the best available provider."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threading.intra_op
    opts.inter_op_num_threads = threading.inter_op
    spin = "1" if threading.spinning else "0"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers())


class Model:
    """A graph with one input: run(x) -> its first output, as a host numpy array."""

    def __init__(self, path: Path, threading: Threading = Threading(), io_binding: str = "auto"):
        if io_binding not in IO_BINDING:
            raise ValueError(f"io_binding must be one of {IO_BINDING}, got {io_binding!r}")
        self.session = session(path, threading)
        self.input = self.session.get_inputs()[0].name
        self.output = self.session.get_outputs()[0].name
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.io_binding = self.device == "cuda" if io_binding == "auto" else io_binding == "on"

    def run(self, x: np.ndarray) -> np.ndarray:
        if not self.io_binding:
            return self.session.run([self.output], {self.input: x})[0]
        binding = self.session.io_binding()
        if self.device == "cuda":
            binding.bind_ortvalue_input(self.input, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        else:
            binding.bind_cpu_input(self.input, x)
        binding.bind_output(self.output, self.device)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


def batched(path: Path, threading: Threading, io_binding: str, max_batch: int, max_delay_s: float, max_queue: int,
            workers: int, name: str) -> DynamicBatcher:
    """The graph at `path` behind a DynamicBatcher with `workers` concurrent batches: a lone request runs
    at once in the caller's thread with `threading` (inline), overlapping batches on a second session
    with `threading.shared(workers)`. submit((N, ...) input) -> Future of ((N, ...) output, batch size)."""
    model = Model(path, threading, io_binding)
    shared = Model(path, threading.shared(workers), io_binding).run if workers > 1 else None
    return DynamicBatcher(model.run, max_batch, max_delay_s, max_queue, name=name, workers=workers, run_shared=shared,
                          inline=True)
