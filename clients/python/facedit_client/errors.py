"""The gateway's gRPC status codes as Python exceptions.

Every call of Client / AsyncClient raises a FaceditError subclass instead of grpc.RpcError:

    try:
        client.edit(Face.seed(7), {"smiel": 1.5})
    except InvalidArgument as err:
        print(err)            # the server's message, e.g. "unknown attribute 'smiel' ..."
        print(err.code)       # "INVALID_ARGUMENT"
        print(err.trace_id)   # the x-trace-id of the failed call (find it in the services' logs)

The class says what to do: InvalidArgument / NotFound / AlreadyExists / FailedPrecondition /
OutOfRange: change the request; Unauthenticated / PermissionDenied: the token or its roles;
ResourceExhausted / Unavailable: already retried with backoff (RetryPolicy), try later;
DeadlineExceeded: the call's deadline passed (Client(timeout_s=...)).
"""
from __future__ import annotations

import grpc

TRACE_ID_KEY = "x-trace-id"  # trailing metadata of every gateway answer (its trace in the logs)
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"  # trailing metadata of a refusal: when to retry


class FaceditError(Exception):
    """A failed call. str(err) and `message` are the server's message unchanged; `code` the gRPC
    status name ("INVALID_ARGUMENT"); `trace_id` the call's trace id (32 hex digits) or None;
    `retry_after_s` the server's retry hint (grpc-retry-pushback-ms) in seconds or None;
    `attempts` how many times the call was sent (> 1 when it was retried)."""

    code = "UNKNOWN"

    def __init__(self, message: str, *, code: str | None = None, trace_id: str | None = None,
                 retry_after_s: float | None = None, attempts: int = 1):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.trace_id = trace_id
        self.retry_after_s = retry_after_s
        self.attempts = attempts


class InvalidArgument(FaceditError):
    """The request is wrong (an unknown attribute, no face in the photo, a strength beyond the
    limit, ...): the message says what to change. Never retried."""
    code = "INVALID_ARGUMENT"


class NotFound(FaceditError):
    """An unknown or expired latent id (cached 1 hour after its last use): send the face again."""
    code = "NOT_FOUND"


class AlreadyExists(FaceditError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(FaceditError):
    code = "FAILED_PRECONDITION"


class OutOfRange(FaceditError):
    code = "OUT_OF_RANGE"


class Unauthenticated(FaceditError):
    """No token, or one the gateway does not know (Client(token=...), FACEDIT_TOKEN)."""
    code = "UNAUTHENTICATED"


class PermissionDenied(FaceditError):
    """The token's client lacks the role the call needs (the message names it)."""
    code = "PERMISSION_DENIED"


class ResourceExhausted(FaceditError):
    """Over the client's rate or concurrency, a full queue, or a quota: retried with backoff
    (after at least `retry_after_s` when the server said so) and raised when retries ran out."""
    code = "RESOURCE_EXHAUSTED"


class Unavailable(FaceditError):
    """The gateway (or a service behind it) cannot be reached: retried with backoff, then raised."""
    code = "UNAVAILABLE"


class DeadlineExceeded(FaceditError):
    """The call's deadline passed (Client(timeout_s=...) or the call's timeout_s=...)."""
    code = "DEADLINE_EXCEEDED"


class Cancelled(FaceditError):
    code = "CANCELLED"


class Internal(FaceditError):
    """A bug or an unexpected failure on the server (INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED)."""
    code = "INTERNAL"


_BY_CODE: dict[grpc.StatusCode, type[FaceditError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.UNKNOWN: Internal,
    grpc.StatusCode.DATA_LOSS: Internal,
    grpc.StatusCode.UNIMPLEMENTED: Internal,
}

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


def status_code(err: grpc.RpcError) -> grpc.StatusCode:
    """The status code of a failed sync or asyncio call (UNKNOWN when it carries none)."""
    code = err.code() if hasattr(err, "code") else None
    return code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def trailing(err: grpc.RpcError) -> dict[str, str]:
    """The string entries of a failed call's trailing metadata."""
    try:
        pairs = err.trailing_metadata() or ()
    except (AttributeError, ValueError, RuntimeError):  # a call that never reached a server may have none
        pairs = ()
    return {k: v for k, v in pairs if isinstance(v, str)}


def retry_pushback_s(err: grpc.RpcError) -> float | None:
    """The server's retry hint (grpc-retry-pushback-ms) in seconds, or None."""
    value = trailing(err).get(RETRY_PUSHBACK_KEY)
    try:
        return max(0.0, int(value) / 1000) if value is not None else None
    except ValueError:
        return None


def from_rpc_error(err: grpc.RpcError, attempts: int = 1) -> FaceditError:
    """The FaceditError for a grpc.RpcError (sync or grpc.aio), keeping the server's message."""
    code = status_code(err)
    details = err.details() if hasattr(err, "details") else None
    cls = _BY_CODE.get(code, FaceditError)
    return cls(details or code.name, code=code.name, trace_id=trailing(err).get(TRACE_ID_KEY),
               retry_after_s=retry_pushback_s(err), attempts=attempts)
