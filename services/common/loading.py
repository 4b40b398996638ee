"""A service whose packs are not (yet) valid keeps running, says why, and loads them once they are.

`Loading(name, build, logger, retry_s)` calls build() -> (servicer, close) at once; build verifies
the pack artefacts the service uses (sha256 of each, Pack.verify) and loads its models. When that
fails with a PackError (a corrupted or missing file, a pack volume still being filled), the
service starts anyway:
- its health is NOT_SERVING (services/common/server.py), so no load balancer sends it calls;
- every call answers UNAVAILABLE with the reason ("pack 'digiface64' ...: words_glove: ... sha256
  ... does not match the manifest") and what happens next;
- build() is tried again every retry_s seconds (each failure logged once per distinct reason);
  once it works the service is SERVING, with no restart.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from facedit_core.errors import Unavailable
from facedit_core.pack import PackError
from services.common.logs import log

DEFAULT_RETRY_S = 5.0


class Loading:
    """servicer: the built servicer, or a stand-in that answers UNAVAILABLE until it is built."""

    def __init__(self, name: str, build: Callable[[], tuple[object, Callable[[], None]]], logger: logging.Logger,
                 retry_s: float = DEFAULT_RETRY_S):
        self.name, self.build, self.logger, self.retry_s = name, build, logger, retry_s
        self._built: object | None = None
        self._close: Callable[[], None] = lambda: None
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reason: str | None = None
        self._thread: threading.Thread | None = None
        if not self._try():
            self._thread = threading.Thread(target=self._retry, name=f"{name}-loading", daemon=True)
            self._thread.start()

    @property
    def ready(self) -> bool:
        return self._built is not None

    @property
    def servicer(self) -> object:
        """What to register with the gRPC server: the servicer itself when it was built at once."""
        return self._built if self._built is not None else _StandIn(self)

    def on_ready(self, callback: Callable[[], None]) -> None:
        """Call `callback` once the servicer is built (now, if it is)."""
        with self._lock:
            if self._built is None:
                self._callbacks.append(callback)
                return
        callback()

    def target(self) -> object:
        """The built servicer; Unavailable with the reason while there is none."""
        built = self._built
        if built is None:
            raise Unavailable(f"the {self.name} service is not ready: {self.reason}; it tries again every "
                              f"{self.retry_s:g} s (fix or replace the pack's files)")
        return built

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.retry_s + 60)
        self._close()

    def _try(self) -> bool:
        try:
            built, close = self.build()
        except PackError as err:
            if str(err) != self.reason:
                log(self.logger, "packs not valid: not serving until they are", logging.ERROR, error=str(err),
                    retry_s=self.retry_s)
            self.reason = str(err)
            return False
        with self._lock:
            self._built, self._close, self.reason = built, close, None
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
        return True

    def _retry(self) -> None:
        while not self._stop.wait(self.retry_s):
            if self._try():
                log(self.logger, "packs valid now: serving")
                return


class _StandIn:
    """Every method of the real servicer, delegating to it once it is built (UNAVAILABLE before)."""

    def __init__(self, loading: Loading):
        self._loading = loading

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        loading = self._loading

        def call(request, context):
            return getattr(loading.target(), method)(request, context)
        return call
