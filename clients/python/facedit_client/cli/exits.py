"""Exit codes of the `facedit` command: what failed, for scripts.

    0  OK            everything asked was done
    1  ERROR         an unexpected failure: a server bug (INTERNAL, UNKNOWN, UNIMPLEMENTED, ...) or ours
    2  USAGE         bad flags, a face or file that cannot be read, a bad config file, a missing extra
    3  PARTIAL       a batch (edit-photo of several photos) where some items failed and others not
    4  REJECTED      the server refused the request as asked: INVALID_ARGUMENT (an unknown attribute,
                     no face in the photo, ...), NOT_FOUND (an expired latent id), ALREADY_EXISTS,
                     FAILED_PRECONDITION, OUT_OF_RANGE: change the request
    5  DENIED        UNAUTHENTICATED (no or an unknown token), PERMISSION_DENIED (a role missing)
    6  UNAVAILABLE   the gateway could not be reached or stayed busy through the retries
                     (UNAVAILABLE, RESOURCE_EXHAUSTED) or the deadline passed (DEADLINE_EXCEEDED)
  130  INTERRUPTED   Ctrl-C
"""
from __future__ import annotations

OK, ERROR, USAGE, PARTIAL, REJECTED, DENIED, UNAVAILABLE, INTERRUPTED = 0, 1, 2, 3, 4, 5, 6, 130

_BY_CODE = {
    "INVALID_ARGUMENT": REJECTED, "NOT_FOUND": REJECTED, "ALREADY_EXISTS": REJECTED,
    "FAILED_PRECONDITION": REJECTED, "OUT_OF_RANGE": REJECTED,
    "UNAUTHENTICATED": DENIED, "PERMISSION_DENIED": DENIED,
    "UNAVAILABLE": UNAVAILABLE, "RESOURCE_EXHAUSTED": UNAVAILABLE, "DEADLINE_EXCEEDED": UNAVAILABLE,
    "USAGE": USAGE,
}


def for_code(code: str) -> int:
    """The exit code of a gRPC status name ("INVALID_ARGUMENT" -> 4); "USAGE" -> 2; others -> 1."""
    return _BY_CODE.get(code, ERROR)
