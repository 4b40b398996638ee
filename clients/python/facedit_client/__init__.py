"""facedit-client: typed sync and asyncio clients of the facedit gateway (facedit.v1.Gateway), and
the `facedit` command line. Needs only grpcio and protobuf; `facedit-client[images]` adds Pillow
for the command line's GIFs and grids.

    from facedit_client import Client, Face, Edit

    with Client("127.0.0.1:50050", token=None, timeout_s=30) as client:
        info = client.attributes()
        resp = client.edit(Face.seed(7), {"smile": 1.5}, keep=["yaw"])
        open("smiling.png", "wb").write(resp.image)
        enc = client.encode("photo.png", fidelity="faithful")   # the person, seconds: enc.inversion

Errors are facedit_client.errors.FaceditError subclasses (InvalidArgument, NotFound, ...);
retries: RetryPolicy. The answers are the messages of facedit_client.v1.gateway_pb2.
"""
from facedit_client.aio import AsyncClient
from facedit_client.client import Client
from facedit_client.connection import (
                                   DEFAULT_ADDRESS,
                                   DEFAULT_FAITHFUL_TIMEOUT_S,
                                   DEFAULT_TIMEOUT_S,
                                   Connection,
                                   version,
)
from facedit_client.errors import (
                                   AlreadyExists,
                                   Cancelled,
                                   DeadlineExceeded,
                                   FaceditError,
                                   FailedPrecondition,
                                   Internal,
                                   InvalidArgument,
                                   NotFound,
                                   OutOfRange,
                                   PermissionDenied,
                                   ResourceExhausted,
                                   Unauthenticated,
                                   Unavailable,
)
from facedit_client.requests import Edit, Face, floats, to_tensor
from facedit_client.retry import NO_RETRY, RetryPolicy
from facedit_client.v1 import common_pb2, gateway_pb2

__version__ = version()

__all__ = [
    "AsyncClient", "Client", "Connection", "DEFAULT_ADDRESS", "DEFAULT_FAITHFUL_TIMEOUT_S", "DEFAULT_TIMEOUT_S", "Edit",
    "Face", "NO_RETRY", "RetryPolicy", "common_pb2", "floats", "gateway_pb2", "to_tensor",
    "AlreadyExists", "Cancelled", "DeadlineExceeded", "FaceditError", "FailedPrecondition", "Internal",
    "InvalidArgument", "NotFound", "OutOfRange", "PermissionDenied", "ResourceExhausted", "Unauthenticated",
    "Unavailable",
]
