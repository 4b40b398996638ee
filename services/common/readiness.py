"""Health that means something: readiness and liveness of one service (grpc.health.v1).

- Readiness: the overall status ("") and the service's own name (e.g. "facedit.v1.Gateway") are
  SERVING only while its packs are loaded (services/common/loading.py), it is not draining (SIGTERM),
  and every dependency it needs answers: the gateway's encoder, directions, generator and Redis,
  the directions service's Redis. Dependencies are checked every CHECK_INTERVAL_S, each with a
  timeout of CHECK_TIMEOUT_S; a change is logged with the reasons.
- Liveness: the name "liveness" is SERVING as long as the process answers health checks at all
  (a wedged process does not): restarting a pod because Redis is down would not bring Redis back.

Kubernetes: readinessProbe grpc with service "" (or omitted), livenessProbe grpc with service
"liveness".
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.logs import log

LIVENESS = "liveness"
CHECK_INTERVAL_S = 1.0
CHECK_TIMEOUT_S = 1.0
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING

# name -> check(timeout_s): returns when the dependency answers, raises (any exception) when it does not
Checks = dict[str, Callable[[float], None]]


def health(channel) -> Callable[[float], None]:
    """A check that the service behind `channel` answers its overall health SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)

    def check(timeout_s: float) -> None:
        status = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s).status
        if status != SERVING:
            raise RuntimeError(f"health {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}")
    return check


def redis(client) -> Callable[[float], None]:
    """A check that Redis answers PING (the client's own socket timeout applies)."""
    def check(timeout_s: float) -> None:
        client.ping()
    return check


class Readiness:
    """Sets the health of `names` from the loading state, draining and the dependency checks."""

    def __init__(self, health_servicer, names: tuple[str, ...], logger: logging.Logger, checks: Checks | None = None,
                 interval_s: float = CHECK_INTERVAL_S, timeout_s: float = CHECK_TIMEOUT_S):
        self.health, self.names, self.logger = health_servicer, names, logger
        self.checks, self.interval_s, self.timeout_s = dict(checks or {}), interval_s, timeout_s
        self._lock = threading.Lock()
        self._loading: str | None = None
        self._failing: dict[str, str] = {}
        self._draining = False
        self._status: int | None = None
        self._publishing = threading.Lock()  # health changes are published in the order they are decided
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        health_servicer.set(LIVENESS, SERVING)

    def start(self) -> Readiness:
        """Check the dependencies once now, then every interval_s in a thread."""
        self.check_now()
        if self.checks:
            self._thread = threading.Thread(target=self._loop, name="readiness", daemon=True)
            self._thread.start()
        return self

    def loading(self, reason: str | None) -> None:
        """The packs are not loaded yet (reason), or are (None)."""
        with self._lock:
            self._loading = reason
        self._update()

    def drain(self) -> None:
        """Not ready from now on (SIGTERM): the callers' balancers stop sending new calls."""
        with self._lock:
            self._draining = True
        self._stop.set()
        self._update()

    def reasons(self) -> list[str]:
        """Why the service is not ready (empty: it is)."""
        with self._lock:
            out = ["draining"] if self._draining else []
            if self._loading:
                out.append(f"packs: {self._loading}")
            out += [f"{name}: {why}" for name, why in sorted(self._failing.items())]
        return out

    def check_now(self) -> None:
        failing = {}
        for name, check in self.checks.items():
            try:
                check(self.timeout_s)
            except Exception as err:  # noqa: BLE001 - any failure means: not reachable
                failing[name] = f"{type(err).__name__}: {str(err)[:200]}"
        with self._lock:
            self._failing = failing
        self._update()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + len(self.checks) * self.timeout_s + 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.check_now()

    def _update(self) -> None:
        with self._publishing:
            reasons = self.reasons()
            status = NOT_SERVING if reasons else SERVING
            if status == self._status:
                return
            self._status = status
            for name in self.names:
                self.health.set(name, status)
        if status == SERVING:
            log(self.logger, "ready")
        else:
            log(self.logger, "not ready", logging.WARNING, reasons=reasons)
