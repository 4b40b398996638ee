"""The asyncio client of facedit.v1.Gateway: Client's methods as coroutines.

    import asyncio
    from facedit_client import AsyncClient, Face

    async def main():
        async with AsyncClient("127.0.0.1:50050") as client:
            edits = [client.edit(Face.seed(s), {"smile": 1.5}) for s in range(8)]
            for resp in await asyncio.gather(*edits):
                print(resp.latent_id, resp.quality[0].score_after)

    asyncio.run(main())

Same deadlines, retries and exceptions as Client (facedit_client.client). Create and use it
inside one running event loop.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Awaitable, Callable, Sequence, TypeVar

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


class AsyncClient:
    """The arguments of Client (facedit_client.client.Client), calls awaited."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, timeout_s: float | None = DEFAULT_TIMEOUT_S,
                 faithful_timeout_s: float | None = DEFAULT_FAITHFUL_TIMEOUT_S, token: str | None = None,
                 tls: bool = False, tls_ca: str | os.PathLike | None = None, tls_server_name: str | None = None,
                 retry: RetryPolicy | None = None, pack: str = ""):
        self.connection = Connection(address, token, tls, tls_ca, tls_server_name)
        self.timeout_s = timeout_s
        self.faithful_timeout_s = faithful_timeout_s
        self.retry = retry or RetryPolicy()
        self.pack = pack
        self._channel = self.connection.aio_channel()
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def edit(self, face: FaceLike, edits: EditsLike, *, keep: Sequence[str] = (),
                   method: str | None = None, format: str = "png", return_original: bool = False,
                   skip_scores: bool = False, replace: bool = False, fidelity: str | None = None,
                   timeout_s: float | None = None) -> gateway_pb2.EditResponse:
        """See Client.edit."""
        request = rq.edit_request(face, edits, keep, method, self.pack, format, return_original, skip_scores,
                                  replace=replace, fidelity=fidelity)
        return await self._unary(self._stub.Edit, request, timeout_s)

    async def edit_photo(self, photo: ImageLike, edits: EditsLike, *, keep: Sequence[str] = (),
                         method: str | None = None, format: str = "png", max_faces: int = 0, replace: bool = False,
                         return_crops: bool = False, fidelity: str = "fast",
                         timeout_s: float | None = None) -> gateway_pb2.EditPhotoResponse:
        """See Client.edit_photo."""
        request = rq.edit_photo_request(photo, edits, keep, method, self.pack, format, max_faces, replace, return_crops,
                                        fidelity)
        return await self._unary(self._stub.EditPhoto, request, timeout_s)

    async def sweep(self, face: FaceLike, target: str, start: float, stop: float, steps: int, *,
                    keep: Sequence[str] = (), method: str | None = None, format: str = "png",
                    fidelity: str | None = None, timeout_s: float | None = None) -> list[gateway_pb2.SweepFrame]:
        """See Client.sweep."""
        request = rq.sweep_request(face, target, start, stop, steps, keep, method, self.pack, format, fidelity)

        async def send(timeout: float | None) -> list[gateway_pb2.SweepFrame]:
            return [frame async for frame in self._stub.EditSweep(request, timeout=timeout,
                                                                  metadata=self.connection.metadata())]
        return await self._call(send, timeout_s, rq.is_faithful(request))

    async def encode(self, photo: ImageLike, *, return_reconstruction: bool = False, format: str = "png",
                     fidelity: str = "fast", timeout_s: float | None = None) -> gateway_pb2.EncodeResponse:
        """See Client.encode."""
        request = rq.encode_request(photo, return_reconstruction, self.pack, format, fidelity)
        return await self._unary(self._stub.Encode, request, timeout_s)

    async def generate(self, seeds: Sequence[int] = (), *, latents: Sequence[Sequence[float]] | None = None,
                       format: str = "png", timeout_s: float | None = None) -> gateway_pb2.GenerateResponse:
        """See Client.generate."""
        request = rq.generate_request(seeds, latents, self.pack, format)
        return await self._unary(self._stub.Generate, request, timeout_s)

    async def attributes(self, *, timeout_s: float | None = None) -> gateway_pb2.ListAttributesResponse:
        """See Client.attributes."""
        return await self._unary(self._stub.ListAttributes, gateway_pb2.ListAttributesRequest(pack=self.pack),
                                 timeout_s)

    async def create_direction(self, name: str, positive: Sequence[ImageLike], negative: Sequence[ImageLike], *,
                               attribute: str = "", method: str | None = None, replace: bool = False,
                               timeout_s: float | None = None) -> gateway_pb2.CreateDirectionResponse:
        """See Client.create_direction."""
        request = rq.create_direction_request(name, positive, negative, attribute, method, replace, self.pack)
        return await self._unary(self._stub.CreateDirection, request, timeout_s)

    async def blend(self, faces: Sequence[FaceLike], *, t: float | None = None, weights: Sequence[float] = (),
                    return_inputs: bool = False, format: str = "png", fidelity: str | None = None,
                    timeout_s: float | None = None) -> gateway_pb2.IstrcFaceResponse:
        """See Client.blend."""
        request = rq.blend_request(faces, t, weights, return_inputs, self.pack, format, fidelity)
        return await self._unary(self._stub.Blend, request, timeout_s)

    async def arithmetic(self, a: FaceLike, b: FaceLike, c: FaceLike, *, linear: bool = False,
                         return_inputs: bool = False, format: str = "png", fidelity: str | None = None,
                         timeout_s: float | None = None) -> gateway_pb2.IstrcFaceResponse:
        """See Client.arithmetic."""
        request = rq.arithmetic_request(a, b, c, linear, return_inputs, self.pack, format, fidelity)
        return await self._unary(self._stub.Arithmetic, request, timeout_s)

    async def _unary(self, method: Callable, request, timeout_s: float | None):
        async def send(timeout: float | None):
            return await method(request, timeout=timeout, metadata=self.connection.metadata())
        return await self._call(send, timeout_s, rq.is_faithful(request))

    async def _call(self, send: Callable[[float | None], Awaitable[T]], timeout_s: float | None,
                    faithful: bool = False) -> T:
        """Client._call with awaits: retries on UNAVAILABLE / RESOURCE_EXHAUSTED within one deadline."""
        budget = budget_s(timeout_s, self.timeout_s, self.faithful_timeout_s, faithful)
        deadline = None if budget is None else time.monotonic() + budget
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await send(remaining)
            except grpc.RpcError as err:
                error = from_rpc_error(err, attempt)
                remaining = None if deadline is None else deadline - time.monotonic()
                wait = next_wait_s(self.retry, status_code(err), error, attempt, remaining)
                if wait is None:
                    raise error from None
            await asyncio.sleep(wait)
