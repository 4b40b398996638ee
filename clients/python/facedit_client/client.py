"""The synchronous client of facedit.v1.Gateway.

    from facedit_client import Client, Face, Edit

    with Client("127.0.0.1:50050") as client:
        resp = client.edit(Face.image("face.png"), {"smile": 1.5}, keep=["yaw"])
        open("edited.png", "wb").write(resp.image)
        resp = client.edit(Face.latent_id(resp.latent_id), {"smile": -1.5})   # by id, no upload

Answers are the generated messages of facedit_client.v1.gateway_pb2 (documented in the
repository's docs/api.md). Every call has a deadline (timeout_s, default 30 s, for all of its
attempts; a call with fidelity "faithful", seconds per face, gets faithful_timeout_s, 120 s), is
retried with backoff on UNAVAILABLE and RESOURCE_EXHAUSTED only (RetryPolicy), and raises a
facedit_client.errors.FaceditError subclass that keeps the server's message.
Thread-safe: share one Client between threads.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Sequence, TypeVar

import grpc

from facedit_client import requests as rq
from facedit_client.connection import (
    DEFAULT_ADDRESS,
    DEFAULT_FAITHFUL_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    Connection,
    budget_s,
)
from facedit_client.errors import from_rpc_error, status_code
from facedit_client.requests import EditsLike, FaceLike, ImageLike
from facedit_client.retry import RetryPolicy, next_wait_s
from facedit_client.v1 import gateway_pb2, gateway_pb2_grpc

T = TypeVar("T")


class Client:
    """address "host:port"; timeout_s: each call's deadline in seconds, its retries included
    (None: no deadline); faithful_timeout_s: the deadline of a call with fidelity "faithful" (a
    faithful inversion takes seconds per face) when it is longer than timeout_s (None: no deadline);
    token, tls, tls_ca, tls_server_name: see Connection; retry: RetryPolicy (RetryPolicy(max_attempts=1):
    no retries); pack: the pack of every call (empty: the gateway's default)."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                 faithful_timeout_s: float | None = DEFAULT_FAITHFUL_TIMEOUT_S, token: str | None = None,
                 tls: bool = False, tls_ca: str | os.PathLike | None = None, tls_server_name: str | None = None,
                 retry: RetryPolicy | None = None, pack: str = ""):
        self.connection = Connection(address, token, tls, tls_ca, tls_server_name)
        self.timeout_s = timeout_s
        self.faithful_timeout_s = faithful_timeout_s
        self.retry = retry or RetryPolicy()
        self.pack = pack
        self._channel = self.connection.channel()
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- the RPCs -----

    def edit(self, face: FaceLike, edits: EditsLike, *, keep: Sequence[str] = (), method: str | None = None,
             format: str = "png", return_original: bool = False, skip_scores: bool = False, replace: bool = False,
             fidelity: str | None = None, timeout_s: float | None = None) -> gateway_pb2.EditResponse:
        """Edit one face: `.image` (bytes of a PNG/JPEG), `.latent_id` (the source, cached), `.quality`
        per edit (score before/after, recommended range), `.scores_before/after` per attribute
        (probabilities 0..1; empty with skip_scores), `.latent` (latent_dim,) float32 (see floats()).
        method: for attribute edits ("interfacegan", "istrc", ...; default the pack's). A face from a photo
        (a photo on a pack with an alignment template, or a photo face's latent id) also gets `.photo`,
        the whole photo with the face edited, and `.photo_face` (box, scores measured on the photo,
        identity_cosine); replace: paste the rendered face into it instead of the edit's change. fidelity
        "fast" / "faithful": how an image face becomes a latent (None: as the face says, Face.image's
        fidelity; bytes and paths "fast"); the latent id of a faithful face renders the person again."""
        request = rq.edit_request(face, edits, keep, method, self.pack, format, return_original, skip_scores,
                                  replace=replace, fidelity=fidelity)
        return self._unary(self._stub.Edit, request, timeout_s)

    def edit_photo(self, photo: ImageLike, edits: EditsLike, *, keep: Sequence[str] = (), method: str | None = None,
                   format: str = "png", max_faces: int = 0, replace: bool = False, return_crops: bool = False,
                   fidelity: str = "fast", timeout_s: float | None = None) -> gateway_pb2.EditPhotoResponse:
        """Every face of a photo (any size up to 4096x4096) edited and blended back: `.image` the whole
        photo, `.faces` (box x0, y0, x1, y1 in pixels, score, latent_id, scores) best first. replace:
        paste the rendered face instead of adding the edit's change (pose edits need it). No face:
        InvalidArgument. fidelity "faithful": each face optimised against the photo (seconds per face;
        each face's `.inversion` says what it reached), "fast" the encoder alone."""
        request = rq.edit_photo_request(photo, edits, keep, method, self.pack, format, max_faces, replace, return_crops,
                                        fidelity)
        return self._unary(self._stub.EditPhoto, request, timeout_s)

    def sweep(self, face: FaceLike, target: str, start: float, stop: float, steps: int, *, keep: Sequence[str] = (),
              method: str | None = None, format: str = "png", fidelity: str | None = None,
              timeout_s: float | None = None) -> list[gateway_pb2.SweepFrame]:
        """Frames of one edit (attribute or direction id) at `steps` (2..64) strengths evenly from
        start to stop; frame.image, frame.strength; frames[0].latent_id the face's cached latent.
        fidelity: of an image face, as in edit()."""
        request = rq.sweep_request(face, target, start, stop, steps, keep, method, self.pack, format, fidelity)
        return self._call(lambda timeout: list(self._stub.EditSweep(
            request, timeout=timeout, metadata=self.connection.metadata())), timeout_s, rq.is_faithful(request))

    def encode(self, photo: ImageLike, *, return_reconstruction: bool = False, format: str = "png",
               fidelity: str = "fast", timeout_s: float | None = None) -> gateway_pb2.EncodeResponse:
        """A face image -> `.latent_id` (cached; edit it by id), `.latent` (latent_dim,), `.expires_in_s`;
        `.reconstruction` (image bytes) with return_reconstruction. fidelity "faithful": optimised
        against the face (seconds; `.inversion`: identity_before/after, pixel errors, steps, seconds)."""
        request = rq.encode_request(photo, return_reconstruction, self.pack, format, fidelity)
        return self._unary(self._stub.Encode, request, timeout_s)

    def generate(self, seeds: Sequence[int] = (), *, latents: Sequence[Sequence[float]] | None = None,
                 format: str = "png", timeout_s: float | None = None) -> gateway_pb2.GenerateResponse:
        """Seeds (or latents, rows of latent_dim floats, when no seeds) -> `.images`, at most 64."""
        request = rq.generate_request(seeds, latents, self.pack, format)
        return self._unary(self._stub.Generate, request, timeout_s)

    def attributes(self, *, timeout_s: float | None = None) -> gateway_pb2.ListAttributesResponse:
        """The pack's `.attributes`, `.directions` (id, method, strength_min/max recommended,
        strength_limit, space; vectors empty), `.default_method`, `.latent_dim`."""
        return self._unary(self._stub.ListAttributes, gateway_pb2.ListAttributesRequest(pack=self.pack), timeout_s)

    def create_direction(self, name: str, positive: Sequence[ImageLike], negative: Sequence[ImageLike], *,
                         attribute: str = "", method: str | None = None, replace: bool = False,
                         timeout_s: float | None = None) -> gateway_pb2.CreateDirectionResponse:
        """A direction "custom/<name>" from images with (positive) and without (negative) an attribute,
        1-32 each, usable at once in edit(). method None / "crg": in the latent; "istrc": on FaceNet
        embeddings. `.direction` (its recommended range), `.positive` / `.negative` projections."""
        request = rq.create_direction_request(name, positive, negative, attribute, method, replace, self.pack)
        return self._unary(self._stub.CreateDirection, request, timeout_s)

    def blend(self, faces: Sequence[FaceLike], *, t: float | None = None, weights: Sequence[float] = (),
              return_inputs: bool = False, format: str = "png", fidelity: str | None = None,
              timeout_s: float | None = None) -> gateway_pb2.IstrcFaceResponse:
        """ISTRC: two faces slerped at t in [0, 1], or the spherical (weighted) mean of 2-16 faces.
        fidelity: of the image faces, as in edit()."""
        request = rq.blend_request(faces, t, weights, return_inputs, self.pack, format, fidelity)
        return self._unary(self._stub.Blend, request, timeout_s)

    def arithmetic(self, a: FaceLike, b: FaceLike, c: FaceLike, *, linear: bool = False, return_inputs: bool = False,
                   format: str = "png", fidelity: str | None = None,
                   timeout_s: float | None = None) -> gateway_pb2.IstrcFaceResponse:
        """ISTRC: a - b + c in FaceNet embedding space (e.g. smiling - neutral + another neutral face).
        fidelity: of the image faces, as in edit()."""
        request = rq.arithmetic_request(a, b, c, linear, return_inputs, self.pack, format, fidelity)
        return self._unary(self._stub.Arithmetic, request, timeout_s)

    # ----- deadlines and retries -----

    def _unary(self, method: Callable, request, timeout_s: float | None):
        return self._call(lambda timeout: method(request, timeout=timeout, metadata=self.connection.metadata()),
                          timeout_s, rq.is_faithful(request))

    def _call(self, send: Callable[[float | None], T], timeout_s: float | None, faithful: bool = False) -> T:
        """send(timeout) until it succeeds, raises a code that is not retried, or the attempts or
        the deadline run out; grpc.RpcError -> FaceditError."""
        budget = budget_s(timeout_s, self.timeout_s, self.faithful_timeout_s, faithful)
        deadline = None if budget is None else time.monotonic() + budget
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return send(remaining)
            except grpc.RpcError as err:
                error = from_rpc_error(err, attempt)
                remaining = None if deadline is None else deadline - time.monotonic()
                wait = next_wait_s(self.retry, status_code(err), error, attempt, remaining)
                if wait is None:
                    raise error from None
            time.sleep(wait)


__all__ = ["Client"]
