"""Dynamic batching of the gateway's own downstream calls: concurrent Edits share one RPC.

Under load, many Edit requests are at the same step at once: each would send its own
EncodeImages (one image) and GenerateImages (one or two latents). `MergedHop` puts such
calls of one hop and pack through a DynamicBatcher (services/common/batcher.py), so the
calls waiting while earlier ones are in flight leave as one RPC with all their items; the
downstream service then batches them as one request. Each merged RPC costs the gateway and
the service one RPC's overhead (about 1 ms of CPU in all, most of a small model's own
cost) instead of one per Edit. A lone call (nothing else waiting) is made at once in the
caller's thread, as before.

Every item gets its own answer:
- the results are split per item, in order;
- when a merged call fails with INVALID_ARGUMENT (one item is bad, e.g. an image that
  does not decode), each item is called again on its own, so only the bad one fails, with
  the message it would have had alone;
- any other error (the service is down, overloaded, too slow) is every item's error;
- a merged call's deadline is the latest of its items' deadlines (capped by the hop
  timeout), and each caller waits no longer than its own deadline.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from facedit_core.errors import DeadlineExceeded, FaceditError
from services.common.batcher import DynamicBatcher

LOG = logging.getLogger("gateway.merged")

# call_many(items, deadline) -> one result per item; deadline: time.monotonic() by which to answer
CallMany = Callable[[list, float], list]


class MergedHop:
    """One hop (e.g. "encoder" for one pack): call(item, deadline) -> its result, merged with concurrent calls.

    max_batch: items per merged call; workers: merged calls in flight at once; max_delay_s: how long a
    merged call waits for more items, only when others were waiting (see DynamicBatcher)."""

    def __init__(self, name: str, call_many: CallMany, max_batch: int = 32, workers: int = 2,
                 max_delay_s: float = 0.001, max_queue: int = 1024):
        self.name, self.call_many = name, call_many
        self.batcher = DynamicBatcher(self._run, max_batch, max_delay_s, max_queue, name=f"merge-{name}",
                                      workers=workers, inline=True)

    def call(self, item: Any, deadline: float) -> Any:
        rows = np.empty(1, dtype=object)
        rows[0] = (item, deadline)
        try:
            out, _ = self.batcher.call(rows, deadline - time.monotonic())
        except DeadlineExceeded:
            raise DeadlineExceeded(f"{self.name}: no answer before the deadline") from None
        if isinstance(out[0], BaseException):
            raise out[0]
        return out[0]

    def _run(self, rows: np.ndarray) -> np.ndarray:
        """(B,) object array of (item, deadline) -> (B,) object array of results or FaceditErrors."""
        items = [r[0] for r in rows]
        out = np.empty(len(rows), dtype=object)
        try:
            for k, result in enumerate(self.call_many(items, max(r[1] for r in rows))):
                out[k] = result
        except FaceditError as err:
            if len(rows) == 1 or err.status != "INVALID_ARGUMENT":
                raise
            for k, (item, deadline) in enumerate(rows):  # find the bad item(s): each alone
                try:
                    out[k] = self.call_many([item], deadline)[0]
                except FaceditError as alone:
                    out[k] = alone
            if not any(isinstance(x, FaceditError) for x in out):  # the merge itself was refused
                LOG.warning("%s refused a merged call of %d items (%s) but took each alone: lower the gateway's "
                            "--merge-max-batch to what the service accepts in one request", self.name, len(rows),
                            err)
        return out

    def close(self) -> None:
        self.batcher.close()


class MergedHops:
    """MergedHop per (hop, pack), made on first use. make(hop, pack) -> call_many for that pair."""

    def __init__(self, make: Callable[[str, str], CallMany], max_batch: int = 32, workers: int = 2):
        if max_batch < 1 or workers < 1:
            raise ValueError("merge max batch and workers must be >= 1")
        self.make, self.max_batch, self.workers = make, max_batch, workers
        self._hops: dict[tuple[str, str], MergedHop] = {}
        self._lock = threading.Lock()

    def call(self, hop: str, pack: str, item: Any, deadline: float) -> Any:
        key = (hop, pack)
        merged = self._hops.get(key)
        if merged is None:
            with self._lock:
                merged = self._hops.get(key)
                if merged is None:
                    merged = self._hops[key] = MergedHop(f"{hop}:{pack}", self.make(hop, pack), self.max_batch,
                                                         self.workers)
        return merged.call(item, deadline)

    def close(self) -> None:
        for merged in self._hops.values():
            merged.close()
