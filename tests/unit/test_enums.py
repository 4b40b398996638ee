"""Undefined enum values are refused wherever they sit in a request (services/common/enums.py)."""
import pytest

from facedit.v1 import common_pb2, gateway_pb2
from facedit_core.errors import InvalidArgument
from services.common.enums import check_enums


def test_defined_values_and_unset_fields_pass():
    check_enums(gateway_pb2.EditPhotoRequest())
    check_enums(gateway_pb2.EditPhotoRequest(paste=gateway_pb2.PasteMode.Value(gateway_pb2.PasteMode.keys()[-1])))
    check_enums(gateway_pb2.EditRequest(edits=[common_pb2.EditOp(attribute="smile", method=1)]))


def test_an_undefined_top_level_value_is_refused_with_the_field_and_the_choices():
    with pytest.raises(InvalidArgument) as info:
        check_enums(gateway_pb2.EditPhotoRequest(paste=99))
    message = str(info.value)
    assert message.startswith("paste: 99 is not a value of PasteMode")
    for name in (v.name for v in gateway_pb2.PasteMode.DESCRIPTOR.values):
        assert name in message


@pytest.mark.parametrize("field", ["method", "text_mode"])
def test_an_undefined_value_inside_a_repeated_message_names_its_position(field):
    ops = [common_pb2.EditOp(attribute="smile"), common_pb2.EditOp(attribute="age", **{field: -7})]
    with pytest.raises(InvalidArgument, match=rf"^edits\[1\]\.{field}: -7 is not a value of"):
        check_enums(gateway_pb2.EditRequest(edits=ops))


def test_an_undefined_value_in_a_nested_message_is_refused():
    request = gateway_pb2.EditRequest(face=gateway_pb2.FaceSource(latent=common_pb2.Tensor(dtype=12)))
    with pytest.raises(InvalidArgument, match=r"^face\.latent\.dtype: 12 is not a value of DType"):
        check_enums(request)
