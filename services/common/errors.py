"""The core library's domain errors <-> gRPC status codes (used by the server interceptor and
by the gateway for downstream failures)."""
from __future__ import annotations

import grpc

from facedit_core.errors import FaceditError


class Unauthenticated(FaceditError):
    """No or unknown credentials (services/common/security.py)."""

    status = "UNAUTHENTICATED"


class PermissionDenied(FaceditError):
    """The caller is known but may not do this: a role it lacks, another client's custom direction."""

    status = "PERMISSION_DENIED"


def status_code(err: FaceditError) -> grpc.StatusCode:
    """The gRPC code of a domain error (its `status` name)."""
    return grpc.StatusCode[err.status]


def reraise_downstream(err: grpc.RpcError, hop: str) -> FaceditError:
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
    if code == grpc.StatusCode.PERMISSION_DENIED:  # e.g. replacing another client's custom direction
        return PermissionDenied(details)
    if code in passthrough:
        return FaceditError(f"{hop}: {details}" if code in (grpc.StatusCode.UNAVAILABLE,
                                                             grpc.StatusCode.DEADLINE_EXCEEDED) else details, code.name)
    return FaceditError(f"{hop} failed ({code.name}): {details}", "INTERNAL")
