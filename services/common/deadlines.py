"""Every call has a deadline: the caller's, or the service's default when it sent none.

grpc reports a call without a deadline as about 9.2e18 seconds left (not None); waiting that
long overflows the platform's time_t. `remaining` turns it (and any deadline beyond
`max_s`) into an explicit bound.
"""
from __future__ import annotations

DEFAULT_DEADLINE_S = 30.0    # a call whose caller set no deadline
MAX_DEADLINE_S = 300.0       # the longest deadline a caller can ask for
_NO_DEADLINE_S = 1e9         # time_remaining() above this means the caller set none


def remaining(context, default_s: float = DEFAULT_DEADLINE_S, max_s: float = MAX_DEADLINE_S) -> float:
    """Seconds this call may still take (> 0 unless its deadline has passed): the caller's
    deadline capped at max_s, or default_s when the caller set none."""
    left = context.time_remaining() if context is not None else None
    if left is None or left > _NO_DEADLINE_S:
        return default_s
    return min(max(left, 0.0), max_s)
