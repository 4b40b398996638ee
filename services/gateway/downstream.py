"""The gateway's calls to the internal services: stubs over channels with message limits and fast
reconnects, every call within the request's deadline (Budget) and the hop timeout, in a span of the
request's trace, timed by the metrics; and a pool of threads for work that overlaps a request's
blocking calls."""
from __future__ import annotations

import contextvars
import time
from concurrent.futures import Future, ThreadPoolExecutor

import grpc

from facedit.v1 import directions_pb2_grpc, encoder_pb2_grpc, generator_pb2_grpc
from facedit_core.errors import FaceditError
from services.common import channels, deadlines, metrics, security, tracing
from services.common import readiness as readiness_checks
from services.common.errors import reraise_downstream

STEPS = {"EncodeImages": "encode", "Compose": "compose", "GenerateImages": "generate", "ScoreImages": "score",
         "DetectFaces": "detect", "ListDirections": "pack", "EmbedImages": "embed"}  # trace span per method


class Downstream:
    """Stubs of the three internal services, each call with a deadline and a span of the current trace,
    and a pool of threads for work that overlaps a request's blocking calls (start, aside)."""

    def __init__(self, encoder: str, directions: str, generator: str, hop_timeout_s: float, aside_threads: int = 32,
                 tls: security.ChannelSecurity | None = None):
        """tls: (m)TLS of the channels to the three services; None = plaintext."""
        opts = channels.options(max_send_bytes=channels.MAX_RESPONSE_BYTES)
        self.channels = {name: security.channel(address, tls, opts)
                         for name, address in (("encoder", encoder), ("directions", directions),
                                               ("generator", generator))}
        self.encoder = encoder_pb2_grpc.EncoderStub(self.channels["encoder"])
        self.directions = directions_pb2_grpc.DirectionsStub(self.channels["directions"])
        self.generator = generator_pb2_grpc.GeneratorStub(self.channels["generator"])
        self._steps = {id(m): STEPS.get(name, name) for stub in (self.encoder, self.directions, self.generator)
                       for name, m in vars(stub).items()}
        self.hop_timeout_s = hop_timeout_s
        self._aside = ThreadPoolExecutor(max_workers=aside_threads, thread_name_prefix="aside")
        metrics.instrument_downstream(self)  # facedit_downstream_call_seconds per hop and RPC

    def close(self) -> None:
        self._aside.shutdown(wait=False, cancel_futures=True)

    def checks(self) -> dict:
        """Readiness checks (services/common/readiness.py): each internal service answers SERVING."""
        return {name: readiness_checks.health(channel) for name, channel in self.channels.items()}

    def aside(self, fn, *args) -> Future:
        """fn(*args) on a pool thread, in the request's context (its trace span and client), while the
        request's thread goes on; .result() gives its value or error."""
        return self._aside.submit(contextvars.copy_context().run, fn, *args)

    def call(self, hop: str, method, request, budget: "Budget", metadata=(), hop_timeout_s: float | None = None):
        """A blocking call (cheaper than a future: no hand-off to the channel's spin thread), in a span
        named after its step that the service called continues; at most hop_timeout_s (default: the
        gateway's --hop-timeout-s) of the caller's budget."""
        with tracing.step(self._steps.get(id(method), "call"), hop=hop):
            try:
                return method(request, timeout=budget.timeout(hop_timeout_s or self.hop_timeout_s),
                              metadata=(*metadata, *tracing.outgoing_metadata()))
            except grpc.RpcError as err:
                raise reraise_downstream(err, hop) from None

    def start(self, hop: str, method, request, budget: "Budget") -> Future:
        """Make the call now on a pool thread (a blocking call there: a grpc future would start the
        channel's spin thread whenever no other call is in flight); .result() waits for its answer
        (or raises its error)."""
        return self.aside(self.call, hop, method, request, budget)


class Budget:
    """What is left of a request's deadline."""

    def __init__(self, context, default_s: float):
        self.deadline = time.monotonic() + deadlines.remaining(context, default_s)

    @classmethod
    def until(cls, deadline: float) -> "Budget":
        """A budget ending at `deadline` (time.monotonic())."""
        budget = cls.__new__(cls)
        budget.deadline = deadline
        return budget

    def timeout(self, hop_s: float) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise FaceditError("deadline exceeded before the next step", "DEADLINE_EXCEEDED")
        return min(hop_s, left)
