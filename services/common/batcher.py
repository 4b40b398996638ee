"""Dynamic batching: merge concurrent requests into one model call.

Each request is (n, ...) rows; a worker thread takes the first waiting
request, adds every request already queued (up to `max_batch` rows), and -
only when other requests were waiting, i.e. under concurrency - waits up to
`max_delay_s` for more. A lone request therefore runs at once; under load,
requests pile up while the model runs and the next batch is full.
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

from services.common.errors import InvalidArgument, ResourceExhausted


class _Request:
    __slots__ = ("rows", "future")

    def __init__(self, rows: np.ndarray):
        self.rows = rows
        self.future: Future = Future()


class DynamicBatcher:
    """run_batch: (B, ...) -> (B, ...) on the concatenated rows of a batch.

    submit() returns a Future of (n, ...) outputs and the size of the batch
    that served it.
    """

    def __init__(self, run_batch: Callable[[np.ndarray], np.ndarray], max_batch: int = 64,
                 max_delay_s: float = 0.002, max_queue: int = 256, name: str = "batcher"):
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1, max_delay_s >= 0")
        self.run_batch, self.max_batch, self.max_delay_s = run_batch, max_batch, max_delay_s
        self.queue: queue.Queue[_Request | None] = queue.Queue(maxsize=max_queue)
        self._pending: _Request | None = None  # taken from the queue but did not fit the last batch
        self.batches = 0
        self.rows = 0
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, rows: np.ndarray) -> Future:
        if len(rows) > self.max_batch:
            raise InvalidArgument(f"{len(rows)} rows in one request; the limit is {self.max_batch}")
        request = _Request(rows)
        try:
            self.queue.put_nowait(request)
        except queue.Full:
            raise ResourceExhausted(f"server busy: {self.queue.maxsize} requests already queued; retry with backoff")
        return request.future

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(5)

    def _next(self, timeout: float | None) -> _Request | None:
        if self._pending is not None:
            request, self._pending = self._pending, None
            return request
        if timeout is None:
            return self.queue.get()
        if timeout <= 0:
            return self.queue.get_nowait()
        return self.queue.get(timeout=timeout)

    def _collect(self) -> list[_Request] | None:
        first = self._next(None)
        if first is None:
            return None
        batch, rows = [first], len(first.rows)
        deadline = time.perf_counter() + self.max_delay_s
        while rows < self.max_batch:
            concurrent = len(batch) > 1 or not self.queue.empty()
            wait = deadline - time.perf_counter() if concurrent else 0.0
            try:
                request = self._next(wait)
            except queue.Empty:
                break
            if request is None:  # close() while collecting: serve what we have, then stop
                self.queue.put(None)
                break
            if rows + len(request.rows) > self.max_batch:
                self._pending = request
                break
            batch.append(request)
            rows += len(request.rows)
        return batch

    def _loop(self) -> None:
        while True:
            batch = self._collect()
            if batch is None:
                return
            live = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                out = self.run_batch(np.concatenate([r.rows for r in live]))
            except Exception as err:  # noqa: BLE001 - every request of the batch gets the error
                for r in live:
                    r.future.set_exception(err)
                continue
            self.batches += 1
            self.rows += len(out)
            offset = 0
            for r in live:
                r.future.set_result((out[offset:offset + len(r.rows)], len(out)))
                offset += len(r.rows)
