"""Plain domain errors, raised by the core library, the services and training alike.

Each error carries a message for a person and the name of the status a server answers with
(`status`, one of the gRPC status names, e.g. "INVALID_ARGUMENT"); the services' interceptor
maps it to the gRPC code (services/common/errors.py). No grpc here.
"""
from __future__ import annotations

STATUSES = ("INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED", "ABORTED", "UNAVAILABLE",
            "DEADLINE_EXCEEDED", "INTERNAL")


MAX_ECHO_CHARS = 80  # a caller's input quoted back in a message is cut to this


def shorten(value, limit: int = MAX_ECHO_CHARS) -> str:
    """str(value) cut to `limit` characters (with a note of the full length): a caller's input
    quoted in an error message or a log line never makes it large."""
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class FaceditError(Exception):
    """A failure with a message for a person; `status` says which kind (default INTERNAL)."""

    status = "INTERNAL"

    def __init__(self, message: str, status: str | None = None):
        super().__init__(message)
        if status is not None:
            if status not in STATUSES:
                raise ValueError(f"unknown status {status!r}; use one of {STATUSES}")
            self.status = status


class InvalidArgument(FaceditError):
    """The caller's input is wrong; the message says what to send instead."""

    status = "INVALID_ARGUMENT"


class NotFound(FaceditError):
    status = "NOT_FOUND"


class FailedPrecondition(FaceditError):
    status = "FAILED_PRECONDITION"


class ResourceExhausted(FaceditError):
    status = "RESOURCE_EXHAUSTED"


class Unavailable(FaceditError):
    status = "UNAVAILABLE"


class DeadlineExceeded(FaceditError):
    status = "DEADLINE_EXCEEDED"
