"""Property-based tests of the gateway's request validation (hypothesis), through real gRPC servers
on loopback: whatever a caller sends, the answer is OK or a caller's error (INVALID_ARGUMENT,
NOT_FOUND, FAILED_PRECONDITION, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED) with a short message —
never INTERNAL or UNKNOWN — and the gateway keeps serving.

FACEDIT_FUZZ_EXAMPLES sets the cases per RPC (2,000 in `make test`; `make fuzz` runs many more).
"""
from __future__ import annotations

import math
import os
import string

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facedit.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc

EXAMPLES = int(os.environ.get("FACEDIT_FUZZ_EXAMPLES", "2000"))
CALLER_ERRORS = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                 grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
MAX_MESSAGE_CHARS = 600  # a status message stays short whatever the input (echoes are cut to 80 characters)
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

ATTRIBUTES = ["smile", "age", "eyeglasses", "beard", "yaw", "blond_hair"]
names = st.one_of(st.sampled_from(ATTRIBUTES + ["", "custom/x", "interfacegan/smile", "words/smile"]),
                  st.text(max_size=120), st.text(alphabet=string.ascii_lowercase + "/_", min_size=1, max_size=300))
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.sampled_from([0.0, 1.0, -3.0, 1e30, -1e30, math.nan, math.inf]))
enums = st.one_of(st.integers(min_value=0, max_value=8), st.integers(min_value=-(2**31), max_value=2**31 - 1))
dims = st.one_of(st.integers(min_value=0, max_value=70), st.integers(min_value=0, max_value=2**62))


@st.composite
def tensors(draw):
    shape = draw(st.lists(dims, max_size=9))
    return common_pb2.Tensor(dtype=draw(enums), shape=shape, data=draw(st.binary(max_size=600)))


@st.composite
def faces(draw):
    kind = draw(st.sampled_from(["seed", "latent", "latent_id", "image", "none"]))
    if kind == "seed":
        return gateway_pb2.FaceSource(seed=draw(st.integers(min_value=-(2**63), max_value=2**63 - 1)))
    if kind == "latent":
        return gateway_pb2.FaceSource(latent=draw(tensors()))
    if kind == "latent_id":
        return gateway_pb2.FaceSource(latent_id=draw(names))
    if kind == "image":
        return gateway_pb2.FaceSource(image=draw(st.binary(max_size=300)))
    return gateway_pb2.FaceSource()


@st.composite
def edit_ops(draw):
    target = draw(st.sampled_from(["attribute", "direction_id", "text", "none"]))
    op = common_pb2.EditOp(strength=draw(floats), method=draw(enums), text_mode=draw(enums))
    if target != "none":
        setattr(op, target, draw(names))
    return op


def pack_names():
    return st.one_of(st.just(""), st.just("tiny"), names)


@st.composite
def edit_requests(draw):
    return gateway_pb2.EditRequest(pack=draw(pack_names()), face=draw(faces()),
                                   edits=draw(st.lists(edit_ops(), max_size=20)), keep=draw(st.lists(names, max_size=20)),
                                   format=draw(enums), return_original=draw(st.booleans()),
                                   skip_scores=draw(st.booleans()))


@st.composite
def generate_requests(draw):
    return gateway_pb2.GenerateRequest(pack=draw(pack_names()),
                                       seeds=draw(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1),
                                                           max_size=70)),
                                       latents=draw(tensors()), format=draw(enums))


@st.composite
def sweep_requests(draw):
    return gateway_pb2.EditSweepRequest(pack=draw(pack_names()), face=draw(faces()), edit=draw(edit_ops()),
                                        start=draw(floats), stop=draw(floats),
                                        keep=draw(st.lists(names, max_size=5)), steps=draw(enums),
                                        format=draw(enums))


@st.composite
def photo_requests(draw):
    return gateway_pb2.EditPhotoRequest(pack=draw(pack_names()), image=draw(st.binary(max_size=300)),
                                        edits=draw(st.lists(edit_ops(), max_size=4)),
                                        keep=draw(st.lists(names, max_size=4)), paste=draw(enums),
                                        max_faces=draw(enums), return_crops=draw(st.booleans()),
                                        format=draw(enums))


@pytest.fixture(scope="module")
def gateway(tiny_servers):
    with grpc.insecure_channel(tiny_servers.addresses["gateway"]) as channel:
        yield gateway_pb2_grpc.GatewayStub(channel)


def undefined_enum(message) -> bool:
    """Whether any enum field of the message, at any depth, holds a number its enum does not define."""
    for field, value in message.ListFields():
        if field.enum_type is not None:
            values = value if field.is_repeated else [value]
            if any(v not in field.enum_type.values_by_number for v in values):
                return True
        elif field.message_type is not None:
            items = value if field.is_repeated else [value]
            if any(undefined_enum(item) for item in items):
                return True
    return False


def answer(call, request, stream: bool = False):
    """Make the call; return its status code, failing on anything but OK or a caller's error, and on
    anything but INVALID_ARGUMENT for a request with an undefined enum value."""
    try:
        out = call(request, timeout=20)
        if stream:
            list(out)
        code = grpc.StatusCode.OK
    except grpc.RpcError as err:
        assert err.code() in CALLER_ERRORS, f"{err.code().name}: {err.details()}\nrequest: {str(request)[:500]}"
        assert len(err.details() or "") <= MAX_MESSAGE_CHARS, f"{len(err.details())}-character message"
        code = err.code()
    if undefined_enum(request):
        assert code == grpc.StatusCode.INVALID_ARGUMENT, f"{code.name} for {str(request)[:500]}"
    return code


@FUZZ
@given(request=edit_requests())
def test_edit_answers_every_request_with_ok_or_a_callers_error(gateway, request):
    answer(gateway.Edit, request)


@FUZZ
@given(request=generate_requests())
def test_generate_answers_every_request_with_ok_or_a_callers_error(gateway, request):
    answer(gateway.Generate, request)


@FUZZ
@given(request=sweep_requests())
def test_edit_sweep_answers_every_request_with_ok_or_a_callers_error(gateway, request):
    answer(gateway.EditSweep, request, stream=True)


@FUZZ
@given(request=photo_requests())
def test_edit_photo_answers_every_request_with_ok_or_a_callers_error(gateway, request):
    answer(gateway.EditPhoto, request)


def test_the_gateway_still_serves_after_the_fuzzing(gateway):
    reply = gateway.Edit(gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(seed=1),
                                                 edits=[common_pb2.EditOp(attribute="smile", strength=1.0)]),
                         timeout=20)
    assert reply.image.startswith(b"\x89PNG")
