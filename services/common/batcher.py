"""Dynamic batching: merge concurrent requests into one model call.

Each request is (n, ...) rows; a worker thread takes the first waiting
request, adds every request already queued (up to `max_batch` rows), and -
only when other requests were waiting, i.e. under concurrency - waits up to
`max_delay_s` for more. A lone request therefore runs at once; under load,
requests pile up while the model runs and the next batch is full.

With `workers` > 1, that many threads take turns collecting a batch and run their
batches at the same time (one collects while the others run). A lone request with no
other batch running calls `run_batch`; a batch of several requests, or one that
overlaps another, calls `run_shared` (e.g. ONNX Runtime with every core for a lone
request, one core per batch under load).

With `inline=True`, a lone request - none other submitted in the last `max_delay_s`,
nothing queued or running - runs at once in the submitting thread (submit() returns a
done Future): no hand-off to a worker and back, which at concurrency 1 is two thread
wake-ups per call. Requests that come closer together are batched as above.

`call(rows, timeout_s)` submits and waits at most `timeout_s`: a request whose caller's
deadline passed (or whose future was cancelled) while it was queued leaves the queue without
running, so a flood of abandoned requests does not keep the model busy after its callers left.

Each batcher reports its batch sizes, queue waits, model call times, queue depth and dropped
requests as facedit_batcher_*{batcher=name} (services/common/metrics.py).
"""
from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable

import numpy as np

from facedit_core.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from services.common.metrics import BatcherMetrics


class _Request:
    __slots__ = ("deadline", "future", "queued_at", "rows")

    def __init__(self, rows: np.ndarray, deadline: float | None, queued_at: float):
        self.rows = rows
        self.future: Future = Future()
        self.deadline = deadline  # time.monotonic() after which nobody waits for the answer; None: no limit
        self.queued_at = queued_at  # time.perf_counter() of submit


class DynamicBatcher:
    """run_batch: (B, ...) -> (B, ...) on the concatenated rows of a batch.

    submit() returns a Future of (n, ...) outputs and the size of the batch
    that served it.
    """

    def __init__(self, run_batch: Callable[[np.ndarray], np.ndarray], max_batch: int = 64,
                 max_delay_s: float = 0.002, max_queue: int = 256, name: str = "batcher", workers: int = 1,
                 run_shared: Callable[[np.ndarray], np.ndarray] | None = None, inline: bool = False):
        if max_batch < 1 or max_queue < 1 or max_delay_s < 0 or workers < 1:
            raise ValueError("max_batch, max_queue and workers must be >= 1, max_delay_s >= 0")
        self.name = name
        self.run_batch, self.max_batch, self.max_delay_s = run_batch, max_batch, max_delay_s
        self.run_shared = run_shared or run_batch
        self.inline = inline
        self._last_submit = float("-inf")  # time.perf_counter() of the last submit
        self.queue: queue.Queue[_Request | None] = queue.Queue(maxsize=max_queue)
        self._pending: _Request | None = None  # taken from the queue but did not fit the last batch
        self._collecting = threading.Lock()  # one worker collects at a time (it owns _pending)
        self._stats = threading.Lock()  # guards running, batches, rows, shared
        self.running = 0  # batches in the model now
        self.batches = 0
        self.rows = 0
        self.shared = 0  # batches that ran beside another (run_shared)
        self.expired = 0  # requests dropped from the queue: their deadline passed before they ran
        self.metrics = BatcherMetrics(name, self)
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{k}" if workers > 1 else name,
                                          daemon=True) for k in range(workers)]
        for t in self._threads:
            t.start()

    def call(self, rows: np.ndarray, timeout_s: float):
        """submit(rows) and wait at most timeout_s for (outputs, batch size); DeadlineExceeded after
        that, and the request leaves the queue if it has not started."""
        future = self.submit(rows, time.monotonic() + timeout_s)
        try:
            return future.result(timeout=max(timeout_s, 0.0))
        except FutureTimeout:
            future.cancel()
            raise DeadlineExceeded(f"{self.name}: no answer within the deadline ({timeout_s:.3g} s)") from None

    def submit(self, rows: np.ndarray, deadline: float | None = None) -> Future:
        """Queue rows (n, ...); a Future of (outputs (n, ...), batch size). deadline: time.monotonic()
        after which the request is dropped unrun (its future fails with DeadlineExceeded)."""
        if len(rows) > self.max_batch:
            raise InvalidArgument(f"{len(rows)} rows in one request; the limit is {self.max_batch}")
        now = time.perf_counter()
        request = _Request(rows, deadline, now)
        lone = now - self._last_submit >= self.max_delay_s
        self._last_submit = now
        if self.inline and lone and self._pending is None and self.queue.empty() and self._claim_idle():
            m = self.metrics
            try:
                out = self.run_batch(rows)
                m.execution.observe(time.perf_counter() - now)
                m.queue_wait.observe(0.0)
                m.rows.observe(len(rows))
                with self._stats:
                    self.batches += 1
                    self.rows += len(rows)
                request.future.set_result((out, len(rows)))
            except Exception as err:  # noqa: BLE001 - the caller gets it from the future, as from a batch
                request.future.set_exception(err)
            finally:
                with self._stats:
                    self.running -= 1
            return request.future
        try:
            self.queue.put_nowait(request)
        except queue.Full:
            self.metrics.rejected.inc()
            raise ResourceExhausted(f"server busy: {self.queue.maxsize} requests already queued; retry with backoff")
        return request.future

    def queued(self) -> int:
        """Requests waiting to run (the facedit_batcher_queued_requests gauge)."""
        return self.queue.qsize() + (self._pending is not None)

    def _claim_idle(self) -> bool:
        """True (and the model counted as running) when no batch is running."""
        with self._stats:
            if self.running:
                return False
            self.running += 1
            return True

    def close(self) -> None:
        for _ in self._threads:
            self.queue.put(None)
        for t in self._threads:
            t.join(5)

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
            with self._collecting:
                batch = self._collect()
            if batch is None:
                return
            live = self._live(batch)
            if not live:
                continue
            m, started = self.metrics, time.perf_counter()
            for r in live:
                m.queue_wait.observe(started - r.queued_at)
            with self._stats:
                # a lone request with the model idle gets every thread (latency); a batch of several
                # requests means load: other workers will run beside it, so it takes its share
                shared = self.running > 0 or (len(live) > 1 and len(self._threads) > 1)
                self.running += 1
            try:
                rows = live[0].rows if len(live) == 1 else np.concatenate([r.rows for r in live])
                out = (self.run_shared if shared else self.run_batch)(rows)
                m.execution.observe(time.perf_counter() - started)
                m.rows.observe(len(out))
            except Exception as err:  # noqa: BLE001 - every request of the batch gets the error
                for r in live:
                    r.future.set_exception(err)
                continue
            finally:
                with self._stats:
                    self.running -= 1
            with self._stats:
                self.batches += 1
                self.rows += len(out)
                self.shared += shared
            offset = 0
            for r in live:
                r.future.set_result((out[offset:offset + len(r.rows)], len(out)))
                offset += len(r.rows)

    def _live(self, batch: list[_Request]) -> list[_Request]:
        """The requests of a batch still worth running: not cancelled, deadline not passed."""
        now, live = time.monotonic(), []
        for r in batch:
            if not r.future.set_running_or_notify_cancel():
                continue
            if r.deadline is not None and r.deadline <= now:
                r.future.set_exception(DeadlineExceeded(f"{self.name}: the deadline passed while queued"))
                with self._stats:
                    self.expired += 1
                self.metrics.expired.inc()
                continue
            live.append(r)
        return live
