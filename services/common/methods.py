"""Edit methods: proto enum <-> the lower-case names used in packs and Redis."""
from __future__ import annotations

from facedit.v1 import common_pb2

NAMES = {
    common_pb2.METHOD_INTERFACEGAN: "interfacegan",
    common_pb2.METHOD_TLGAN: "tlgan",
    common_pb2.METHOD_CRG: "crg",
    common_pb2.METHOD_ISTRC: "istrc",
    common_pb2.METHOD_WORDS: "words",
    common_pb2.METHOD_SEFA: "sefa",
    common_pb2.METHOD_CUSTOM: "custom",
}
ENUMS = {name: value for value, name in NAMES.items()}


def name_of(method: int) -> str | None:
    """Enum value -> name; None for METHOD_UNSPECIFIED."""
    return NAMES.get(method)
