"""Admission control: per-client rate and concurrency limits (the gateway's --client-* flags).

A client is the named client of its bearer token (services/common/tokens.py; its entry may set
its own `rate_per_s` and `concurrency`), or, when the service checks no tokens, the caller's IP
address. Each client has
- a token bucket: `rate_per_s` calls per second on average, up to `burst` at once after a quiet spell;
- a concurrency limit: at most `concurrency` calls in progress (a stream counts until it ends).
A call over either limit is refused at once with RESOURCE_EXHAUSTED, a message saying which limit
and when to retry, and the trailing metadata `grpc-retry-pushback-ms` (the retry hint gRPC
clients with a retry policy follow). Health and reflection are not limited.

The state of at most MAX_CLIENTS clients is kept; idle clients (full bucket, nothing in progress)
are forgotten first, so a flood of distinct addresses cannot grow the gateway's memory.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time

import grpc

from services.common import security
from services.common.interceptors import WrappingInterceptor
from services.common.logs import log
from services.common.tracing import add_trailing_metadata

MAX_CLIENTS = 10_000
CONCURRENCY_RETRY_S = 0.1  # the hint when a client has too many calls in progress
RETRY_PUSHBACK = "grpc-retry-pushback-ms"
UNLIMITED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclasses.dataclass(frozen=True)
class Limits:
    """rate_per_s: calls per second (0 = no rate limit); burst: calls at once after a quiet spell;
    concurrency: calls in progress (0 = no limit)."""

    rate_per_s: float
    burst: int
    concurrency: int

    def __post_init__(self):
        if not (math.isfinite(self.rate_per_s) and self.rate_per_s >= 0) or self.burst < 1 or self.concurrency < 0:
            raise ValueError(f"client limits: rate >= 0, burst >= 1, concurrency >= 0; got {self}")


class _State:
    __slots__ = ("in_flight", "stamp", "tokens")

    def __init__(self, burst: int, now: float):
        self.tokens, self.stamp, self.in_flight = float(burst), now, 0


class Refused(Exception):
    """A call over its client's limits: why, and the seconds after which a retry may succeed."""

    def __init__(self, message: str, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Admission:
    """The per-client accounting, thread-safe. enter(client, limits) before a call, leave(client) after."""

    def __init__(self, max_clients: int = MAX_CLIENTS, clock=time.monotonic):
        self.max_clients, self.clock = max_clients, clock
        self._clients: collections.OrderedDict[str, _State] = collections.OrderedDict()
        self._lock = threading.Lock()

    def enter(self, client: str, limits: Limits) -> None:
        """Count one call of `client` in; Refused when it is over its rate or concurrency."""
        now = self.clock()
        with self._lock:
            state = self._clients.get(client)
            if state is None:
                state = self._clients[client] = _State(limits.burst, now)
                self._forget_idle(now)
            else:
                self._clients.move_to_end(client)
            if limits.rate_per_s > 0:
                state.tokens = min(limits.burst, state.tokens + (now - state.stamp) * limits.rate_per_s)
            state.stamp = now
            if limits.concurrency and state.in_flight >= limits.concurrency:
                raise Refused(f"client {client} has {state.in_flight} calls in progress, its limit; retry after "
                              f"{CONCURRENCY_RETRY_S:g} s or when one has finished", CONCURRENCY_RETRY_S)
            if limits.rate_per_s > 0:
                if state.tokens < 1:
                    wait = (1 - state.tokens) / limits.rate_per_s
                    raise Refused(f"client {client} is over its rate of {limits.rate_per_s:g} calls/s "
                                  f"(burst {limits.burst}); retry after {wait:.2f} s", wait)
                state.tokens -= 1
            state.in_flight += 1

    def leave(self, client: str) -> None:
        with self._lock:
            state = self._clients.get(client)
            if state is not None:
                state.in_flight = max(0, state.in_flight - 1)

    def in_flight(self, client: str) -> int:
        with self._lock:
            state = self._clients.get(client)
            return 0 if state is None else state.in_flight

    def __len__(self) -> int:
        return len(self._clients)

    def _forget_idle(self, now: float) -> None:
        """Over max_clients: drop the least recently seen clients with nothing in progress."""
        if len(self._clients) <= self.max_clients:
            return
        for name in list(self._clients):
            if len(self._clients) <= self.max_clients:
                break
            if self._clients[name].in_flight == 0:
                del self._clients[name]


def client_key(context) -> str:
    """The authenticated client's name, else the caller's IP address ("ip:<address>")."""
    who = security.client()
    if who is not None:
        return who.name
    peer = context.peer() or "unknown"  # "ipv4:127.0.0.1:5555", "ipv6:[::1]:5555", "unix:..."
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0] if kind in ("ipv4", "ipv6") else rest
    return f"ip:{host.strip('[]')}"


class AdmissionInterceptor(WrappingInterceptor):
    """Applies Admission to every method but health and reflection. Runs after the security
    interceptor (so the client is known); a client's own limits from its tokens-file entry win
    over `default`."""

    def __init__(self, default: Limits, logger: logging.Logger, admission: Admission | None = None):
        super().__init__()
        self.default, self.logger = default, logger
        self.admission = admission or Admission()

    def limits(self) -> Limits:
        """The calling client's limits: its tokens-file entry's, each missing one from `default`."""
        who = security.client()
        if who is None or (who.rate_per_s is None and who.burst is None and who.concurrency is None):
            return self.default
        d = self.default
        return Limits(d.rate_per_s if who.rate_per_s is None else who.rate_per_s,
                      d.burst if who.burst is None else who.burst,
                      d.concurrency if who.concurrency is None else who.concurrency)

    def _admit(self, method: str, context) -> str:
        key = client_key(context)
        try:
            self.admission.enter(key, self.limits())
        except Refused as err:
            log(self.logger, "call refused", logging.INFO, method=method, code="RESOURCE_EXHAUSTED", client=key,
                error=str(err))
            add_trailing_metadata(context, ((RETRY_PUSHBACK, str(max(1, round(err.retry_after_s * 1000)))),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
        return key

    def wrap(self, kind: str, behaviour, method: str):
        if method.startswith(UNLIMITED):
            return None
        streams = kind.endswith("_stream")

        def unary(request, context):
            key = self._admit(method, context)
            try:
                return behaviour(request, context)
            finally:
                self.admission.leave(key)

        def stream(request, context):
            key = self._admit(method, context)
            try:
                yield from behaviour(request, context)
            finally:
                self.admission.leave(key)
        return stream if streams else unary
