"""Reading request fields: text, dates, statuses, tags and typed custom attributes.

Validation happens here, once, at the edge; every reason names the field and what was expected, and
all the errors of one request are reported together (a client fixes them in one go).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from api.errors import Invalid
from funnelsync.attributes import ATTRIBUTE_TYPES, TYPE_BY_LOWER, type_of
from funnelsync.normalize import normalize_country
from funnelsync.timeutil import to_utc

# One set of types and one rule for every door (funnelsync/attributes.py); this module reads JSON for it.
_TYPE_BY_LOWER = TYPE_BY_LOWER
# The commercial product's rule for custom attribute keys.
_KEY_RE = re.compile(r"^[A-Za-z0-9_]{1,255}$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}
MAX_TEXT = 255


def parse_datetime(value: Any) -> datetime:
    """A date or datetime from an API payload, as aware UTC.

    Accepts ISO 8601 with or without time and offset (``2022-10-14``, ``2022-10-14 00:00:00``,
    ``2022-10-14T00:00:00Z``) and epoch seconds. Input without a zone is read in the account time zone
    (README, "Where data lives").

    Raises:
        ValueError: with what was expected.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(float(value), tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"epoch seconds {value!r} are out of range") from None
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"expected an ISO 8601 date-time such as '2022-10-14 00:00:00', got {value!r}")
    text = value.strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        try:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
        except ValueError:
            raise ValueError(
                f"expected an ISO 8601 date-time such as '2022-10-14 00:00:00' or '2022-10-14T00:00:00Z', got {value!r}"
            ) from None
    try:
        return to_utc(parsed)
    except (OverflowError, ValueError):
        raise ValueError(f"{value!r} is out of range once converted to UTC") from None


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def typed_attribute_value(kind: str, value: Any) -> Any:
    """Check a custom attribute value against its type and return it in its stored form.

    Raises:
        ValueError: naming the type and the offending value.
    """
    if value is None:
        return None
    if kind == "String":
        if not isinstance(value, str):
            raise ValueError(f"type String expects a string, got {type(value).__name__} {value!r}")
        if len(value) > MAX_TEXT:
            raise ValueError(f"type String holds at most {MAX_TEXT} characters, got {len(value)}")
        return value
    if kind == "Integer":
        if isinstance(value, bool):
            raise ValueError(f"type Integer expects a whole number, got boolean {value!r}")
        number: int | None = None
        if isinstance(value, int):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        elif isinstance(value, str) and _INT_RE.match(value.strip()):
            number = int(value.strip())
        if number is None:
            raise ValueError(f"type Integer expects a whole number, got {value!r}")
        # Past 64 bits the JSON columns (SQLite json, PostgreSQL jsonb read back) round it to a float.
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise ValueError(f"type Integer holds a 64-bit whole number ({_INT64_MIN} to {_INT64_MAX}), got {number}")
        return number
    if kind == "Decimal":
        if isinstance(value, bool):
            raise ValueError(f"type Decimal expects a number, got boolean {value!r}")
        if isinstance(value, (int, float)) and math.isfinite(value):
            # Stored as a float so the value's JSON type says Decimal too (5 → 5.0).
            return float(value)
        if isinstance(value, str):
            try:
                decimal = Decimal(value.strip())
            except InvalidOperation:
                raise ValueError(f"type Decimal expects a number, got {value!r}") from None
            # A finite decimal past float range ("1e400") would be stored as Infinity, which is not JSON.
            if decimal.is_finite() and math.isfinite(float(decimal)):
                return float(decimal)
        raise ValueError(f"type Decimal expects a number, got {value!r}")
    if kind == "Timestamp":
        if not isinstance(value, str):
            raise ValueError(f"type Timestamp expects an ISO 8601 date-time string, got {value!r}")
        try:
            return parse_datetime(value)
        except ValueError as exc:
            raise ValueError(f"type Timestamp {exc}") from None
    if kind == "Boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"type Boolean expects true or false, got {value!r}")
    raise ValueError(f"unknown type {kind!r}: use one of {', '.join(ATTRIBUTE_TYPES)}")


class FieldReader:
    """Reads fields of one JSON object, collecting every error before raising one 422."""

    def __init__(self, body: dict[str, Any], prefix: str = "") -> None:
        self.body = body
        self.prefix = prefix
        self.errors: list[dict[str, str]] = []

    def fail(self, name: str, reason: str) -> None:
        """Record an error of field ``name``."""
        self.errors.append({"field": self.prefix + name, "reason": reason})

    def has(self, name: str) -> bool:
        """Whether the body carries the field (even as null)."""
        return name in self.body

    def text(self, name: str, *, required: bool = False, max_len: int = MAX_TEXT) -> str | None:
        """A string field (trimmed, empty → None); numbers are refused, not silently turned to text."""
        value = self.body.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                self.fail(name, "is required")
            return None
        if not isinstance(value, str):
            if isinstance(value, int) and not isinstance(value, bool) and name.endswith("external_id"):
                return str(value)
            self.fail(name, f"expected a string, got {type(value).__name__}")
            return None
        value = value.strip()
        if len(value) > max_len:
            self.fail(name, f"at most {max_len} characters, got {len(value)}")
            return None
        return value

    def email(self, name: str) -> str | None:
        """An email address (light check: something@something)."""
        value = self.text(name, max_len=320)
        if value is not None and ("@" not in value or value.startswith("@") or value.endswith("@")):
            self.fail(name, f"not an email address: {value!r}")
            return None
        return value

    def country(self, name: str) -> str | None:
        """An ISO-3166 alpha-2 country code."""
        value = self.text(name, max_len=10)
        if value is None:
            return None
        try:
            return normalize_country(value)
        except ValueError as exc:
            self.fail(name, str(exc))
            return None

    def datetime(self, name: str) -> datetime | None:
        """A date-time field (see :func:`parse_datetime`); null → None."""
        value = self.body.get(name)
        if value is None or value == "":
            return None
        try:
            return parse_datetime(value)
        except ValueError as exc:
            self.fail(name, str(exc))
            return None

    def tags(self, name: str, value: Any) -> list[str]:
        """A list of tag names (non-empty strings, at most 255 characters), duplicates dropped."""
        if not isinstance(value, list):
            self.fail(name, f"expected a list of tag names, got {type(value).__name__}")
            return []
        out: dict[str, None] = {}
        for i, tag in enumerate(value):
            if not isinstance(tag, str) or not tag.strip():
                self.fail(f"{name}[{i}]", f"expected a non-empty string, got {tag!r}")
            elif len(tag.strip()) > MAX_TEXT:
                self.fail(f"{name}[{i}]", f"at most {MAX_TEXT} characters")
            else:
                out.setdefault(tag.strip(), None)
        return list(out)

    def check(self) -> None:
        """Raise one 422 with every collected error."""
        if self.errors:
            raise Invalid(self.errors)


def attribute_key(reader: FieldReader, where: str, key: Any) -> str | None:
    """A custom attribute key, or None after recording why it is refused."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        reader.fail(where, f"a custom attribute key is 1-255 letters, digits or underscores, got {key!r}")
        return None
    return key


def attribute_type_name(reader: FieldReader, where: str, kind: Any) -> str | None:
    """A custom attribute type name (case-insensitive), or None after recording why it is refused."""
    found = _TYPE_BY_LOWER.get(kind.lower()) if isinstance(kind, str) else None
    if found is None:
        reader.fail(where, f"type must be one of {', '.join(ATTRIBUTE_TYPES)}, got {kind!r}")
    return found


def read_custom_attributes(
    reader: FieldReader, name: str, value: Any, known_types: dict[str, str]
) -> dict[str, tuple[str, Any]]:
    """Custom attributes as ``{key: (type, stored value)}``.

    Takes the create form ``[{"type": "Integer", "key": "seats", "value": 5, "source": "…"}]`` or the
    update form ``{"seats": 5}`` (the type is then the registered one, else inferred from the value).
    A key already registered with another type is refused: one key has one type across customers.
    """
    items: list[tuple[str, Any, Any, Any]] = []  # (where, key, type or None, value)
    if isinstance(value, list):
        for i, item in enumerate(value):
            where = f"{name}[{i}]"
            if not isinstance(item, dict):
                reader.fail(where, f"expected an object with type, key and value, got {type(item).__name__}")
                continue
            missing = [k for k in ("key", "value") if k not in item]
            if missing:
                reader.fail(where, f"missing {' and '.join(missing)}")
                continue
            items.append((where, item["key"], item.get("type"), item["value"]))
    elif isinstance(value, dict):
        items = [(f"{name}.{k}", k, None, v) for k, v in value.items()]
    else:
        reader.fail(name, "expected a list of {type, key, value} objects or an object of key: value, "
                    f"got {type(value).__name__}")
        return {}
    out: dict[str, tuple[str, Any]] = {}
    for where, raw_key, raw_type, raw_value in items:
        key = attribute_key(reader, where + ".key" if isinstance(value, list) else where, raw_key)
        if key is None:
            continue
        # A key given twice in one request holds to the type of its first mention, as if registered.
        known = known_types.get(key) or (out[key][0] if key in out else None)
        if raw_type is not None:
            kind = attribute_type_name(reader, where + ".type", raw_type)
            if kind is None:
                continue
            if known is not None and known != kind:
                reader.fail(where + ".type", f"custom attribute {key!r} is of type {known}, not {kind}")
                continue
        else:
            # A bare JSON value's own type (funnelsync.attributes.type_of, every door's inference).
            kind = known or type_of(raw_value)
        try:
            out[key] = (kind, typed_attribute_value(kind, raw_value))
        except ValueError as exc:
            if isinstance(value, list):
                reader.fail(where + ".value", f"{key}: {exc}")
            else:
                reader.fail(where, str(exc))
    return out
