"""Custom attribute types: one rule for every door that writes one (the CLI, bulk edits, CSV, the API).

A custom attribute key has one type across all customers (String, Integer, Decimal, Timestamp or
Boolean), fixed the first time the key is written:

- a value given with a type (``custom.seats:integer=7``, a ``custom.seats:integer`` column, the API's
  ``{"type": "Integer", …}``) must be of the key's type when the key has one;
- a value given as bare text (``custom.seats=7``, a ``custom.seats`` column) takes the key's type and
  must fit it; for a new key, bare text is a String;
- a bare JSON value (the API's ``{"seats": 7}``) takes the key's type, else the type its JSON form says.

A value that does not fit is refused with the type named; a new key's type is stated once, when it is
first written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

ATTRIBUTE_TYPES = ("String", "Integer", "Decimal", "Timestamp", "Boolean")
TYPE_BY_LOWER = {t.lower(): t for t in ATTRIBUTE_TYPES}


class UntypedText(str):
    """Text given for a custom attribute without a type: it takes the attribute's declared type."""

    __slots__ = ()


class AttributeTypeError(ValueError):
    """A custom attribute value that does not fit the attribute's type (the message names both)."""


def type_of(value: Any) -> str:
    """The type a typed Python value (a bare JSON value too) stands for: bool, int, float or Decimal,
    datetime; anything else is a String."""
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, (float, Decimal)):
        return "Decimal"
    if isinstance(value, datetime):
        return "Timestamp"
    return "String"


TextConverters = Mapping[str, Callable[[str], Any]]


def settle_attribute(
    key: str, value: Any, declared: str | None, convert: TextConverters
) -> tuple[Any, str, bool]:
    """``(stored value, type, new)`` of one custom attribute value.

    Args:
        key: the attribute key (for messages).
        value: an :class:`UntypedText`, a typed value (int, float, bool, datetime, str) or None (clear).
        declared: the key's registered type, None for a new key.
        convert: ``{type: text → value}`` for bare text (the door's own readers of numbers and dates).

    Raises:
        AttributeTypeError: naming the key, its type and the value.
    """
    if value is None:
        return None, declared or "String", False
    if isinstance(value, UntypedText):
        kind = declared or "String"
        try:
            return convert[kind](str(value)), kind, declared is None
        except ValueError as exc:
            raise AttributeTypeError(f"custom.{key} is of type {kind}: {value!r} does not fit ({exc})") from None
    kind = type_of(value)
    if declared is not None and declared != kind:
        raise AttributeTypeError(
            f"custom.{key} is of type {declared}, not {kind}: give a {declared} value "
            f"(or custom.{key}={value} to have it read as {declared})"
        )
    return value, kind, declared is None


def settle_column_type(key: str, named: str | None, declared: str | None) -> tuple[str, bool]:
    """``(type, new)`` of a file's or sheet's column of attribute ``key``: the type its header names
    (``custom.seats:integer``), which must be the declared one, else the declared type, else String.

    Raises:
        AttributeTypeError: the header names a type other than the declared one.
    """
    if named is not None and declared is not None and named != declared:
        raise AttributeTypeError(
            f"custom.{key} is of type {declared}, not {named}: name it custom.{key}:{declared.lower()} "
            f"(or leave the type out)"
        )
    return named or declared or "String", declared is None


def new_attribute_note(key: str, kind: str) -> str:
    """What the output says when a key is first written."""
    return f"custom.{key} is a new custom attribute, typed {kind}"
