"""TorchServe handler for a pack's generator.onnx (runs inside TorchServe's Python worker).

It imports nothing from this repository (the worker has only the .mar's files on its
path): numpy and onnxruntime only. `training/packs/torchserve_export.py` packs it into the
.mar; `services/generator/torchserve_backend.py` is its client.

Wire format (one TorchServe request):

    request   PredictionsRequest.input["data"] (gRPC) or the HTTP body:
              n * latent_dim float32, little-endian, row after row (n >= 1, finite);
              latent_dim comes from the model's input shape.

    response  a 24-byte header of six little-endian uint32, then a payload:
                magic    0x31474446 (b"FDG1")
                status   0 = ok, 400 = this request is malformed
                rows     n (0 on error)
                size     R, the image side (0 on error)
                batch    latents in the ONNX Runtime call that served this request
                requests requests in that TorchServe batch (valid or not)
              payload: ok -> n * R * R * 3 uint8 RGB pixels (n, R, R, 3);
                       error -> a UTF-8 message for a person.

Every request of a batch gets an answer: valid ones are concatenated into one ONNX
Runtime call and split back; a malformed one gets status 400 (also set per request
with `context.set_response_status(400, message, idx)`, which TorchServe's HTTP API
turns into the response code; its gRPC API 0.12 ignores it and returns OK with the
body, hence the status in the header). The handler never raises for one bad request.
"""
from __future__ import annotations

import os
import struct

import numpy as np

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import onnxruntime as ort  # noqa: E402

MAGIC = 0x31474446  # b"FDG1" little-endian
HEADER = struct.Struct("<6I")
OK, BAD_REQUEST = 0, 400
INPUT_KEYS = ("data", "body")


class GeneratorHandler:
    """initialize(context) loads generator.onnx; handle(data, context) answers a batch."""

    def __init__(self):
        self.session = None
        self.input_name = ""
        self.latent_dim = 0
        self.initialized = False

    def initialize(self, context) -> None:
        props = context.system_properties
        model_dir = props.get("model_dir") or "."
        manifest = getattr(context, "manifest", None) or {}
        model_file = (manifest.get("model") or {}).get("serializedFile") or "generator.onnx"
        config = (getattr(context, "model_yaml_config", None) or {}).get("handler") or {}
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(config.get("intra_op_threads", 0))
        opts.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.session = ort.InferenceSession(os.path.join(model_dir, model_file), sess_options=opts,
                                            providers=providers)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        if not isinstance(inp.shape[-1], int):
            raise ValueError(f"{model_file}: the latent axis of input {inp.name!r} must be static, got {inp.shape}")
        self.latent_dim = int(inp.shape[-1])
        self.initialized = True

    def _latents(self, request) -> np.ndarray:
        """One request's (n, latent_dim) float32 latents; ValueError with a message when malformed."""
        body = None
        if isinstance(request, dict):
            for key in INPUT_KEYS:
                if request.get(key) is not None:
                    body = request[key]
                    break
        if not isinstance(body, (bytes, bytearray)):
            raise ValueError(f"send the latents as raw float32 bytes in input {INPUT_KEYS[0]!r} "
                             f"(got {type(body).__name__})")
        row = 4 * self.latent_dim
        if len(body) == 0 or len(body) % row:
            raise ValueError(f"latents: {len(body)} bytes is not a positive multiple of {row} "
                             f"({self.latent_dim} float32 per latent)")
        z = np.frombuffer(bytes(body), dtype="<f4").reshape(-1, self.latent_dim)
        if not np.isfinite(z).all():
            raise ValueError("latents: contain NaN or infinity")
        return z.astype(np.float32, copy=False)

    def handle(self, data, context):
        if not self.initialized:  # TorchServe calls initialize first; be safe anyway
            self.initialize(context)
        data = data or []
        latents: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for idx, request in enumerate(data):
            try:
                latents[idx] = self._latents(request)
            except ValueError as err:
                errors[idx] = str(err)
        rows = sum(len(z) for z in latents.values())
        pixels = None
        if latents:
            pixels = self.session.run(None, {self.input_name: np.concatenate(list(latents.values()))})[0]
        size = int(pixels.shape[1]) if pixels is not None else 0
        out, start = [], 0
        for idx in range(len(data)):
            if idx in errors:
                message = errors[idx].encode("utf-8")
                context.set_response_status(400, errors[idx], idx)
                out.append(HEADER.pack(MAGIC, BAD_REQUEST, 0, 0, rows, len(data)) + message)
                continue
            n = len(latents[idx])
            chunk = np.ascontiguousarray(pixels[start:start + n], dtype=np.uint8)
            start += n
            out.append(HEADER.pack(MAGIC, OK, n, size, rows, len(data)) + chunk.tobytes())
        for idx in range(len(data)):
            _set_content_type(context, idx)
        return out


def _set_content_type(context, idx: int) -> None:
    setter = getattr(context, "set_response_content_type", None)
    if setter is not None:
        try:
            setter(idx, "application/octet-stream")
        except (TypeError, IndexError, AttributeError):
            pass
