"""ONNX Runtime sessions: the CUDA execution provider when present, else CPU."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime as ort  # noqa: E402


def providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, CPU always last."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session(path: Path, intra_op_threads: int = 0) -> ort.InferenceSession:
    """A session for `path`; intra_op_threads 0 lets ONNX Runtime choose."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers())
