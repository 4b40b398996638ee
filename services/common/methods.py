"""Edit methods: proto enum <-> the lower-case names used in packs and Redis
(facedit_core.records.METHODS)."""
from __future__ import annotations

from facedit.v1 import common_pb2
from facedit_core.records import METHODS

NAMES = {getattr(common_pb2, f"METHOD_{name.upper()}"): name for name in METHODS}
ENUMS = {name: value for value, name in NAMES.items()}


def name_of(method: int) -> str | None:
    """Enum value -> name; None for METHOD_UNSPECIFIED."""
    return NAMES.get(method)
