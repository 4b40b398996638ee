"""Give freed memory back to the system (glibc).

A service that refused or finished large messages frees their buffers, but glibc keeps the freed
pages in its per-thread arenas, so the process's RSS stays at its peak (measured: a gateway at
+115 MB after 90 refused 50 MB requests). `Trimmer` calls glibc's malloc_trim(0) every
interval_s in a daemon thread, which returns the free pages at the top of every arena; where the
C library is not glibc it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import threading

DEFAULT_INTERVAL_S = 5.0


def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


class Trimmer:
    """malloc_trim(0) every interval_s until close(); trim() once now. available: glibc was found."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S):
        self.interval_s = interval_s
        self._trim = _malloc_trim()
        self._stop = threading.Event()
        self._thread = None
        if self._trim is not None and interval_s > 0:
            self._thread = threading.Thread(target=self._loop, name="malloc-trim", daemon=True)
            self._thread.start()

    @property
    def available(self) -> bool:
        return self._trim is not None

    def trim(self) -> None:
        if self._trim is not None:
            self._trim(0)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.trim()

    def close(self) -> None:
        self._stop.set()
