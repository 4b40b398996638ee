"""Errors a servicer raises; the server interceptor turns them into gRPC statuses."""
from __future__ import annotations

import grpc


class ServiceError(Exception):
    """An error with a gRPC status code and a message for a person."""

    code = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


def reraise_downstream(err: grpc.RpcError, hop: str) -> ServiceError:
    """A downstream call's error as one to return to our caller.

    The caller's own mistakes (INVALID_ARGUMENT, NOT_FOUND, ...) keep their code
    and message; a downstream outage becomes UNAVAILABLE / DEADLINE_EXCEEDED
    naming the hop.
    """
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    passthrough = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                   grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED,
                   grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE}
    if code in passthrough:
        return ServiceError(f"{hop}: {details}" if code in (grpc.StatusCode.UNAVAILABLE,
                                                             grpc.StatusCode.DEADLINE_EXCEEDED) else details, code)
    return ServiceError(f"{hop} failed ({code.name}): {details}", grpc.StatusCode.INTERNAL)
