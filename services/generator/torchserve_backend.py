"""The generator's second backend: forward latents to a real TorchServe over its gRPC API.

TorchServe does the batching (batchSize / maxBatchDelay from the .mar's
model-config.yaml, see training/packs/torchserve_export.py); the handler and its wire format
are in services/generator/ts_handler.py. `TorchServeGenerator.generate` has the same
contract as `OnnxGenerator.generate`, so the servicer does not know which one it has.

Readiness (`check`, a dependency check of services/common/readiness.py): TorchServe must answer on the
generator's own channel and render for this pack: one latent rendered on the first check and after any
failed one, then a Ping per check while it stays healthy. So the generator is NOT_SERVING while
TorchServe's JVM starts and its worker loads the model, and when TorchServe lacks the pack's model.

Errors, as gRPC statuses of the generator service:
  the handler rejected the latents (status 400 in its reply)  -> INVALID_ARGUMENT
  TorchServe unreachable or without a worker (UNAVAILABLE)     -> UNAVAILABLE
  the caller's deadline ran out                                -> DEADLINE_EXCEEDED
  TorchServe does not serve this pack's model/version          -> FAILED_PRECONDITION
  anything else                                                -> INTERNAL
"""
from __future__ import annotations

import dataclasses
import json
import struct

import grpc
import numpy as np
from google.protobuf import empty_pb2

from facedit.torchserve import inference_pb2, inference_pb2_grpc
from facedit_core.errors import FaceditError, FailedPrecondition, InvalidArgument
from facedit_core.pack import Pack
from services.common import channels

# The handler's reply header (services/generator/ts_handler.py): magic, status, rows, size, batch, requests.
_HEADER = struct.Struct("<6I")
_MAGIC = 0x31474446


@dataclasses.dataclass(frozen=True)
class Prediction:
    pixels: np.ndarray  # (n, R, R, 3) uint8
    batch_rows: int  # latents in the model call that served this request
    batch_requests: int  # requests in that TorchServe batch


class TorchServeGenerator:
    """One pack's generator served by TorchServe as model `<pack>-generator` (version = pack version)."""

    def __init__(self, pack: Pack, address: str, model_name: str | None = None, pin_version: bool = True,
                 default_timeout_s: float = 30.0):
        self.pack = pack
        self.modulation_size = 0  # no modulated generator on TorchServe: faithful faces need the onnx backend
        self.address = address
        self.model_name = model_name or f"{pack.name}-generator"
        self.model_version = pack.version if pin_version else ""
        self.default_timeout_s = default_timeout_s
        self.channel = grpc.insecure_channel(address, options=channels.options())
        self.stub = inference_pb2_grpc.InferenceAPIsServiceStub(self.channel)
        self._rendered = False  # the last readiness check rendered or pinged successfully

    def check(self, timeout_s: float) -> None:
        """Readiness: returns when TorchServe serves this pack's model, raises FaceditError when not.
        A render of one latent until one works (the model is loaded, this channel is connected), then
        only TorchServe's Ping while the checks keep passing."""
        try:
            if self._rendered:
                self.ping(timeout_s)
            else:
                self.generate(np.zeros((1, self.pack.latent_dim), np.float32), timeout_s)
                self._rendered = True
        except Exception:
            self._rendered = False
            raise

    def ping(self, timeout_s: float) -> None:
        """TorchServe's own health (gRPC Ping): FaceditError unless it says Healthy."""
        try:
            reply = self.stub.Ping(empty_pb2.Empty(), timeout=timeout_s)
        except grpc.RpcError as err:
            raise self._error(err) from None
        try:
            status = json.loads(reply.health).get("status")
        except (ValueError, AttributeError):
            status = None
        if status != "Healthy":
            raise FaceditError(f"TorchServe at {self.address} is not healthy: {reply.health.strip()[:200]!r}",
                               "UNAVAILABLE")

    def generate(self, z: np.ndarray, timeout_s: float | None) -> tuple[np.ndarray, int]:
        """z (N, D) float32 -> ((N, R, R, 3) uint8, latents in the model batch)."""
        z = np.asarray(z)
        p = self.predict(np.ascontiguousarray(z, dtype="<f4").tobytes(), timeout_s)
        if p.pixels.shape[0] != z.shape[0]:
            raise FaceditError(f"TorchServe returned {p.pixels.shape[0]} images for {z.shape[0]} latents")
        return p.pixels, p.batch_rows

    def predict(self, body: bytes, timeout_s: float | None) -> Prediction:
        """One raw request (the handler's wire format) -> its prediction; FaceditError on failure."""
        request = inference_pb2.PredictionsRequest(model_name=self.model_name, model_version=self.model_version,
                                                   input={"data": body})
        timeout = self.default_timeout_s if timeout_s is None else max(timeout_s, 0.001)
        try:
            reply = self.stub.Predictions(request, timeout=timeout)
        except grpc.RpcError as err:
            raise self._error(err) from None
        return self._parse(reply.prediction)

    def _error(self, err: grpc.RpcError) -> FaceditError:
        code, details = err.code(), (err.details() or "").split("\n")[0]
        where = f"TorchServe at {self.address}"
        if code == grpc.StatusCode.UNAVAILABLE:
            return FaceditError(f"{where} is unavailable: {details}", "UNAVAILABLE")
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return FaceditError(f"{where} did not answer within the deadline", "DEADLINE_EXCEEDED")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return InvalidArgument(f"{where} rejected the request: {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return FaceditError(f"{where} is overloaded: {details}", "RESOURCE_EXHAUSTED")
        # TorchServe 0.12 answers INTERNAL for an unknown model or version.
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.NOT_FOUND) and (
                "not found" in details.lower() or "does not exist" in details.lower()):
            return FailedPrecondition(
                f"{where} does not serve model {self.model_name!r} version {self.model_version or '(default)'} "
                f"({details}); build it with `python -m training.packs.torchserve_export` and load it")
        return FaceditError(f"{where} failed ({code.name}): {details}", "INTERNAL")

    def _parse(self, body: bytes) -> Prediction:
        if len(body) < _HEADER.size:
            raise FaceditError(f"TorchServe reply of {len(body)} bytes is not from ts_handler "
                               f"({body[:80]!r})")
        magic, status, rows, size, batch_rows, batch_requests = _HEADER.unpack_from(body)
        if magic != _MAGIC:
            raise FaceditError(f"TorchServe reply is not from ts_handler ({body[:80]!r})")
        payload = body[_HEADER.size:]
        if status != 0:
            message = payload.decode("utf-8", errors="replace")
            if status == 400:
                raise InvalidArgument(message)
            raise FaceditError(f"TorchServe handler failed ({status}): {message}")
        if len(payload) != rows * size * size * 3:
            raise FaceditError(f"TorchServe reply: {len(payload)} pixel bytes for {rows} images of {size}x{size}")
        pixels = np.frombuffer(payload, dtype=np.uint8).reshape(rows, size, size, 3)
        return Prediction(pixels, batch_rows, batch_requests)

    def close(self) -> None:
        self.channel.close()
