"""Refuse enum values a service does not know.

proto3 enums are open: a value the schema does not define (`paste = 99`) parses fine and arrives
as a bare number, which code reading the field would silently treat as some default. Every
service checks every request with `check_enums` before its handler runs (the error interceptor
of services/common/server.py): an undefined value anywhere in the message, nested or repeated,
is INVALID_ARGUMENT naming the field and the values it takes.
"""
from __future__ import annotations

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from facedit_core.errors import InvalidArgument

_HAS_ENUMS: dict[str, bool] = {}  # message full name -> whether it holds an enum field at any depth


def _has_enums(desc: Descriptor, seen: frozenset[str] = frozenset()) -> bool:
    known = _HAS_ENUMS.get(desc.full_name)
    if known is not None:
        return known
    found = False
    for field in desc.fields:
        if field.type == FieldDescriptor.TYPE_ENUM:
            found = True
        elif field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name not in seen:
            found = _has_enums(field.message_type, seen | {desc.full_name})
        if found:
            break
    if not seen:  # a result found below a recursion guard may be partial: remember only top-level ones
        _HAS_ENUMS[desc.full_name] = found
    return found


def _allowed(field: FieldDescriptor) -> str:
    return ", ".join(f"{v.name} ({v.number})" for v in field.enum_type.values)


def check_enums(message, path: str = "") -> None:
    """InvalidArgument if any enum field of `message` (a protobuf message, at any depth) holds a value
    its enum does not define."""
    if not _has_enums(message.DESCRIPTOR):
        return
    for field, value in message.ListFields():
        name = f"{path}{field.name}"
        if field.type == FieldDescriptor.TYPE_ENUM:
            numbers = field.enum_type.values_by_number
            for v in (value if _is_repeated(field) else (value,)):
                if v not in numbers:
                    raise InvalidArgument(f"{name}: {v} is not a value of {field.enum_type.name}; "
                                          f"use one of {_allowed(field)}")
        elif field.type == FieldDescriptor.TYPE_MESSAGE and _has_enums(field.message_type):
            if field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    if hasattr(item, "DESCRIPTOR"):
                        check_enums(item, f"{name}[{str(key)[:40]}].")
            elif _is_repeated(field):
                for i, item in enumerate(value):
                    check_enums(item, f"{name}[{i}].")
            else:
                check_enums(value, f"{name}.")


def _is_repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf >= 6.31; `label` is gone in 7
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED
