"""The gateway's memo of Compose answers, valid while the pack's registry is unchanged.

Compose (directions service) is a function of the request and of what the registry holds for
the pack, nothing else; and the registry replaces the pack's `stamp` on every write (publish,
custom direction) and its `active` version on every switch (services/directions/registry.py).
So an answer stored with the (active, stamp) read *before* its Compose call is still the
answer while one MGET of the two keys returns the same pair. A hit costs that MGET (about
0.1 ms of the gateway's CPU) instead of a Compose call (about 1 ms of CPU in the gateway and the
directions service together). If the registry changed between the MGET and the call, the
answer is stored under the old pair and is never used: the next MGET reads the new one.

A request with one edit is also answered at another strength: Compose is linear in it (the
delta, the averaging pull and its weight, each part's strength all scale with it), so a stored
answer for strength s0 != 0 becomes the answer for s by scaling with s / s0 - a slider that
moves one edit hits too. Only strengths the stored answer's directions allow
(|s| <= their strength_limit) are answered that way; others go to the directions service,
which says what is wrong with them.

Errors are not remembered (a bad request costs its Compose call every time). The memo holds
at most `size` answers, least recently used first out; size 0 turns it off. Lookups count as
hits or misses in facedit_cache_lookups_total{cache="compose_memo"} (services/common/metrics.py).
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np
import redis

from facedit.v1 import directions_pb2
from services.common.metrics import cache_counters
from services.common.redis_server import read_state
from services.common.tensors import from_tensor, to_tensor


class ComposeMemo:
    DEFAULT_SIZE = 4096

    def __init__(self, client: redis.Redis, size: int = DEFAULT_SIZE):
        if size < 0:
            raise ValueError(f"compose memo size must be >= 0, got {size}")
        self.r, self.size = client, size
        # key -> (registry state, answer, strength of the request's one edit, or None)
        self._answers: OrderedDict[bytes, tuple[tuple, directions_pb2.ComposeResponse, float | None]] = \
            OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.scaled_hits = 0  # scaled_hits: of the hits, answers scaled to a strength
        self._hit, self._miss = cache_counters("compose_memo")

    def lookup(self, request: directions_pb2.ComposeRequest
               ) -> tuple[tuple | None, directions_pb2.ComposeResponse | None]:
        """-> (the registry state to store an answer under, or None if the memo is off; the remembered
        answer, exact or scaled from another strength of the same single edit, or None).
        request.pack must be the pack's name (not "" for the default)."""
        if not self.size:
            return None, None
        state = (request.pack, *read_state(self.r, request.pack))
        exact = request.SerializeToString(deterministic=True)
        with self._lock:
            hit = self._answers.get(exact)
            if hit is not None and hit[0] == state:
                self._answers.move_to_end(exact)
                self.hits += 1
                self._hit.inc()
                return state, hit[1]
        shape = _shape_key(request)  # only for a miss of the exact request
        with self._lock:
            other = self._answers.get(shape) if shape is not None else None
            if other is not None and other[0] == state:
                scaled = _scaled(other[1], other[2], request.edits[0].strength)
                if scaled is not None:
                    self._answers.move_to_end(shape)
                    self.hits += 1
                    self.scaled_hits += 1
                    self._hit.inc()
                    return state, scaled
            self.misses += 1
            self._miss.inc()
        return state, None

    def store(self, state: tuple | None, request: directions_pb2.ComposeRequest,
              answer: directions_pb2.ComposeResponse) -> None:
        """Remember `answer` to `request` under the state `lookup` read before the call."""
        if state is None or state[1] is None or answer.pack.version != state[1]:
            return  # memo off, pack unpublished, or the answer is already of another version
        keys = [request.SerializeToString(deterministic=True)]
        shape = _shape_key(request)
        s0 = request.edits[0].strength if shape is not None else None
        if s0:
            keys.append(shape)
        with self._lock:
            for key in keys:
                self._answers[key] = (state, answer, s0)
                self._answers.move_to_end(key)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)


def _shape_key(request: directions_pb2.ComposeRequest) -> bytes | None:
    """A one-edit request with its strength left out (b"shape:" + bytes), else None."""
    if len(request.edits) != 1:
        return None
    shape = directions_pb2.ComposeRequest()
    shape.CopyFrom(request)
    shape.edits[0].ClearField("strength")
    return b"shape:" + shape.SerializeToString(deterministic=True)


def _scaled(answer: directions_pb2.ComposeResponse, s0: float | None,
            strength: float) -> directions_pb2.ComposeResponse | None:
    """The answer of a one-edit request at `strength` from its answer at s0, or None when it cannot be:
    no s0 (not a one-edit answer) or s0 = 0, or `strength` not finite or beyond what the answer's
    directions allow (|strength| <= each part's strength_limit)."""
    if not s0 or not answer.edits or not math.isfinite(strength):
        return None
    if abs(strength) > min(e.direction.strength_limit for e in answer.edits):
        return None
    factor = strength / s0
    scaled = directions_pb2.ComposeResponse()
    scaled.CopyFrom(answer)
    scaled.delta.CopyFrom(to_tensor((from_tensor(answer.delta, "delta") * np.float32(factor)).astype(np.float32)))
    scaled.pull.CopyFrom(to_tensor((from_tensor(answer.pull, "pull") * np.float32(factor)).astype(np.float32)))
    scaled.pull_weight = answer.pull_weight * factor
    for part in scaled.edits:
        part.strength *= factor
    return scaled
