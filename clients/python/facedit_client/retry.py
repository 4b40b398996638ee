"""Retries with exponential backoff, for UNAVAILABLE and RESOURCE_EXHAUSTED only.

A call has one deadline for all of its attempts (`timeout_s`, default 30 s): attempt n waits
    min(max_backoff_s, initial_backoff_s * multiplier ** (n - 1)) * uniform(0.5, 1)
before it is sent again, or the server's hint (trailing metadata grpc-retry-pushback-ms) when
that is longer, and is not sent when the wait would pass the deadline. Every other status
(INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, DEADLINE_EXCEEDED, ...) is raised at once.

RESOURCE_EXHAUSTED is retried only when the server sent the hint (the gateway's per-client rate
and concurrency limits do): without one it is a full quota of custom directions or a message
too large, which no retry changes. What is retried: every RPC, CreateDirection included (a
CreateDirection whose first attempt was stored although its answer was lost answers the retry
with "already exists"). A sweep (server streaming) is retried whole: it changes nothing on the server.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Callable

import grpc

from facedit_client.errors import RETRYABLE, FaceditError

# on_retry(attempt that failed (1-based), the error it raised, seconds until the next attempt)
RetryHook = Callable[[int, FaceditError, float], None]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """max_attempts: sends of one call in all (1 = no retry); backoffs in seconds.
    on_retry: called before each wait (logging; the CLI's --verbose prints it)."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    on_retry: RetryHook | None = None

    def __post_init__(self):
        if self.max_attempts < 1 or self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s \
                or self.multiplier < 1:
            raise ValueError(f"retry policy: max_attempts >= 1, 0 <= initial_backoff_s <= max_backoff_s, "
                             f"multiplier >= 1; got {self}")

    def backoff_s(self, attempt: int, pushback_s: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based): jittered exponential backoff,
        at least the server's pushback hint."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        wait = base * (rng or random).uniform(0.5, 1.0)
        return max(wait, pushback_s or 0.0)


NO_RETRY = RetryPolicy(max_attempts=1)


def next_wait_s(policy: RetryPolicy, code: grpc.StatusCode, error: FaceditError, attempt: int,
                remaining_s: float | None) -> float | None:
    """Seconds to wait before sending the call again, or None to raise `error` now: the code is
    not retryable, the attempts ran out, or the wait would pass the call's deadline
    (`remaining_s`, None = no deadline)."""
    if code not in RETRYABLE or attempt >= policy.max_attempts:
        return None
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_after_s is None:
        return None  # no retry hint: a full quota or a message too large, which a retry would not change
    wait = policy.backoff_s(attempt, error.retry_after_s)
    if remaining_s is not None and wait >= remaining_s:
        return None
    if policy.on_retry is not None:
        policy.on_retry(attempt, error, wait)
    return wait
