"""Customer filters, shared by metrics, bulk edit and automations: compiled into SQL.

Text is parsed into a small AST (``storage.filter_grammar``), then compiled here into a SQLAlchemy Core
``WHERE`` clause over ``customers`` with bound parameters only.

Semantics a user relies on (documented in docs/metrics.md):
- Text comparisons are case-insensitive (``owner = Ann@Example.com`` matches ``ann@example.com``).
- ``!=`` and ``not in`` keep customers that have no value (``country != US`` keeps customers with no
  country; ``tag != vip`` keeps customers without that tag): "not US" is what the user asked.
- A date without a time means the whole local day in the account time zone: ``lead_created_at =
  2025-01-01`` is that day, ``> 2025-01-01`` starts the day after, ``<= 2025-01-01`` ends with it.
- ``source`` matches a data source by name or ``ds_…`` uuid; ``source_kind`` by kind (stripe, csv, …).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    Float,
    Select,
    Text,
    and_,
    bindparam,
    exists,
    false,
    func,
    not_,
    or_,
    select,
    true,
)

from funnelsync.normalize import normalize_country
from funnelsync.records import CUSTOMER_STATUSES, LEAD_STATUSES
from funnelsync.timeutil import account_timezone
from storage.filter_grammar import (
    ORDER_OPERATORS,
    TEXT_FIELDS,
    TIME_FIELDS,
    Condition,
    FilterError,
    Value,
    parse_filters,
)
from storage.projection import attribute_types
from storage.schema import (
    customer_attributes,
    customer_tags,
    customers,
    data_sources,
    source_customers,
)
from storage.types import UTCDateTime

# custom_attribute_definitions.type → the typed value column of customer_attributes.
ATTRIBUTE_KINDS = {
    "String": "text",
    "Integer": "number",
    "Decimal": "number",
    "Timestamp": "time",
    "Boolean": "bool",
}


# -------------------------------------------------------------------------------------------- compile


def _fail(cond: Condition, value: Value | None, reason: str) -> FilterError:
    return FilterError(cond.expression, value.position if value else cond.position, reason)


def _refuse_order(cond: Condition, what: str) -> None:
    if cond.op in ORDER_OPERATORS:
        raise _fail(
            cond, None, f"{cond.label} {what}: operator {cond.op} does not apply; use =, !=, in or not in"
        )


def _membership(
    cond: Condition, matches_any: ColumnElement[bool], nullable: ColumnElement[bool] | None
) -> ColumnElement[bool]:
    """``=``/``in`` → the match; ``!=``/``not in`` → no match (or no value at all)."""
    if cond.op in ("=", "in"):
        return matches_any
    negated = not_(matches_any)
    return or_(negated, nullable) if nullable is not None else negated


def _parse_time(cond: Condition, value: Value, tz: ZoneInfo) -> tuple[datetime, datetime | None]:
    """A value as (instant, None) for a date-time, or (local midnight, next midnight) for a date."""
    text = value.text.strip()
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text)
            return _local_midnight(day, tz), _local_midnight(day + timedelta(days=1), tz)
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise _fail(
            cond, value, f"{cond.label}: {value.text!r} is not a date (YYYY-MM-DD) or ISO 8601 date-time"
        ) from None
    if parsed.tzinfo is None:  # input without a zone is read in the account zone
        parsed = parsed.replace(tzinfo=tz)
    return parsed, None


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    # Imported lazily to keep the module import graph flat; periods.py owns the DST rule.
    from storage.periods import local_midnight_utc

    return local_midnight_utc(day, tz)


def _time_condition(cond: Condition, column: Any, tz: ZoneInfo) -> ColumnElement[bool]:
    """Compare a UTC timestamp column; a bare date stands for its whole local day."""

    def bound(instant: datetime) -> Any:
        return bindparam(None, instant, type_=UTCDateTime)

    def equals(value: Value) -> ColumnElement[bool]:
        start, end = _parse_time(cond, value, tz)
        if end is None:
            return column == bound(start)
        return and_(column >= bound(start), column < bound(end))

    if cond.op in ("=", "in", "!=", "not in"):
        matches = or_(*[equals(v) for v in cond.values])
        return _membership(cond, matches, column.is_(None))
    start, end = _parse_time(cond, cond.values[0], tz)
    if end is None:
        return {
            "<": column < bound(start),
            "<=": column <= bound(start),
            ">": column > bound(start),
            ">=": column >= bound(start),
        }[cond.op]
    return {
        "<": column < bound(start),
        "<=": column < bound(end),
        ">": column >= bound(end),
        ">=": column >= bound(start),
    }[cond.op]


def _text_condition(cond: Condition, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    """Case-insensitive text comparison (lower() on both sides, so both databases fold alike)."""
    lowered = func.lower(column)
    params = [func.lower(bindparam(None, v, type_=Text)) for v in values]
    if cond.op in ORDER_OPERATORS:
        return {
            "<": lowered < params[0],
            "<=": lowered <= params[0],
            ">": lowered > params[0],
            ">=": lowered >= params[0],
        }[cond.op]
    matches = or_(*[lowered == p for p in params])
    return _membership(cond, matches, column.is_(None))


def _choice(cond: Condition, value: Value, choices: Sequence[str], what: str) -> str:
    by_lower = {c.lower(): c for c in choices}
    found = by_lower.get(value.text.strip().lower())
    if found is None:
        raise _fail(cond, value, f"{value.text!r} is not a {what}; one of: {', '.join(choices)}")
    return found


def _category_condition(cond: Condition, column: Any, values: Sequence[str]) -> ColumnElement[bool]:
    matches = (
        column.in_([bindparam(None, v, type_=Text) for v in values])
        if len(values) > 1
        else (column == bindparam(None, values[0], type_=Text))
    )
    return _membership(cond, matches, column.is_(None))


def _source_condition(cond: Condition, by: str) -> ColumnElement[bool]:
    _refuse_order(cond, "names a data source")
    texts = [v.text for v in cond.values]
    matched: ColumnElement[bool]
    if by == "kind":
        matched = func.lower(data_sources.c.kind).in_([bindparam(None, t.lower(), type_=Text) for t in texts])
    else:
        params = [bindparam(None, t, type_=Text) for t in texts]
        matched = or_(data_sources.c.name.in_(params), data_sources.c.uuid.in_(params))
    linked = exists(
        select(1)
        .select_from(
            source_customers.join(data_sources, data_sources.c.id == source_customers.c.data_source_id)
        )
        .where(source_customers.c.customer_id == customers.c.id, matched)
    )
    return _membership(cond, linked, None)


def _tag_condition(cond: Condition) -> ColumnElement[bool]:
    _refuse_order(cond, "is a tag")
    params = [func.lower(bindparam(None, v.text.strip(), type_=Text)) for v in cond.values]
    tagged = exists(
        select(1).where(
            customer_tags.c.customer_id == customers.c.id, func.lower(customer_tags.c.tag).in_(params)
        )
    )
    return _membership(cond, tagged, None)


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_BOOLS = {"true": True, "false": False, "yes": True, "no": False}


def _infer_kind(value: Value) -> str:
    """The kind of an attribute nobody declared, from how its literal is written."""
    if value.quoted:
        return "text"
    text = value.text.strip()
    if text.lower() in ("true", "false"):
        return "bool"
    if _NUMBER.fullmatch(text):
        return "number"
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ].*)?", text):
        return "time"
    return "text"


def _attribute_condition(cond: Condition, kind: str | None, tz: ZoneInfo) -> ColumnElement[bool]:
    """``EXISTS`` over customer_attributes on the typed value column of ``kind``."""
    kind = kind or _infer_kind(cond.values[0])
    attr = customer_attributes.c
    if kind == "text":
        inner = _text_condition(
            Condition(
                cond.field,
                cond.key,
                "in" if cond.op in ("!=", "not in") else cond.op,
                cond.values,
                cond.expression,
                cond.position,
            ),
            attr.value_text,
            [v.text for v in cond.values],
        )
    elif kind == "number":
        numbers = []
        for value in cond.values:
            if not _NUMBER.fullmatch(value.text.strip()):
                raise _fail(cond, value, f"{cond.label} holds numbers; {value.text!r} is not a number")
            numbers.append(bindparam(None, float(value.text), type_=Float))
        if cond.op in ORDER_OPERATORS:
            column = attr.value_number
            inner = {
                "<": column < numbers[0],
                "<=": column <= numbers[0],
                ">": column > numbers[0],
                ">=": column >= numbers[0],
            }[cond.op]
        else:
            inner = attr.value_number.in_(numbers)
    elif kind == "bool":
        _refuse_order(cond, "holds true/false")
        flags = []
        for value in cond.values:
            flag = _BOOLS.get(value.text.strip().lower())
            if flag is None:
                raise _fail(cond, value, f"{cond.label} holds true/false; {value.text!r} is neither")
            flags.append(bindparam(None, flag, type_=Boolean))
        inner = or_(*[attr.value_bool == f for f in flags])
    else:  # time
        inner = _time_condition(
            Condition(
                cond.field,
                cond.key,
                "in" if cond.op in ("!=", "not in") else cond.op,
                cond.values,
                cond.expression,
                cond.position,
            ),
            attr.value_time,
            tz,
        )
    has = exists(
        select(1).where(
            attr.customer_id == customers.c.id, attr.key == bindparam(None, cond.key, type_=Text), inner
        )
    )
    # "!=" keeps customers without the attribute (they are not equal to the value).
    return not_(has) if cond.op in ("!=", "not in") else has


def compile_condition(
    cond: Condition, *, attribute_types: dict[str, str] | None = None, tz: ZoneInfo | None = None
) -> ColumnElement[bool]:
    """Compile one condition to a boolean clause over ``customers`` (bound parameters only).

    Args:
        cond: the parsed condition.
        attribute_types: custom attribute key → declared type (String, Integer, Decimal, Timestamp,
            Boolean). An undeclared key is typed from its literal: quoted → text, true/false → boolean,
            a number → number, YYYY-MM-DD… → timestamp, anything else → text.
        tz: the zone that bare dates and naive date-times are read in (default: the account zone).

    Raises:
        FilterError: a value that does not fit the field, or an operator that does not apply.
    """
    tz = tz or account_timezone()
    field = cond.field
    texts = [v.text.strip() for v in cond.values]
    if field == "source":
        return _source_condition(cond, "name")
    if field == "source_kind":
        return _source_condition(cond, "kind")
    if field == "tag":
        return _tag_condition(cond)
    if field == "custom":
        declared = (attribute_types or {}).get(cond.key or "")
        return _attribute_condition(cond, ATTRIBUTE_KINDS.get(declared or ""), tz)
    if field == "country":
        _refuse_order(cond, "is a country code")
        codes = []
        for value in cond.values:
            try:
                codes.append(normalize_country(value.text) or "")
            except ValueError as exc:
                raise _fail(cond, value, str(exc)) from None
        return _category_condition(cond, customers.c.country, codes)
    if field == "status":
        _refuse_order(cond, "is a status")
        statuses = [_choice(cond, v, CUSTOMER_STATUSES, "customer status") for v in cond.values]
        return _category_condition(cond, customers.c.status, statuses)
    if field == "lead_status":
        _refuse_order(cond, "is a lead status")
        statuses = [_choice(cond, v, LEAD_STATUSES, "lead status") for v in cond.values]
        return _category_condition(cond, customers.c.lead_status, statuses)
    if field in TIME_FIELDS:
        return _time_condition(cond, customers.c[field], tz)
    if field in TEXT_FIELDS:
        return _text_condition(cond, customers.c[field], texts)
    raise _fail(cond, None, f"unknown field {field!r}")  # unreachable: the parser checks names


def compile_filters(
    conditions: Iterable[Condition],
    *,
    attribute_types: dict[str, str] | None = None,
    tz: ZoneInfo | None = None,
) -> ColumnElement[bool]:
    """AND the compiled conditions together; no conditions → ``true()`` (every customer)."""
    clauses = [compile_condition(c, attribute_types=attribute_types, tz=tz) for c in conditions]
    if not clauses:
        return true()
    return and_(*clauses) if len(clauses) > 1 else clauses[0]


def check_sources(conn: Connection, conditions: Iterable[Condition]) -> None:
    """Refuse a ``source`` condition naming no existing data source (a typo would silently match nothing).

    Raises:
        FilterError: naming the unknown source and the known ones.
    """
    wanted = [(c, v) for c in conditions if c.field == "source" for v in c.values]
    if not wanted:
        return
    known = {name: uuid for name, uuid in conn.execute(select(data_sources.c.name, data_sources.c.uuid))}
    uuids = set(known.values())
    for cond, value in wanted:
        if value.text not in known and value.text not in uuids:
            names = ", ".join(sorted(known)) or "none yet"
            raise _fail(cond, value, f"no data source named {value.text!r} (known: {names})")


def build_filter(
    conn: Connection, expressions: Iterable[str] | str | None, *, tz: ZoneInfo | None = None
) -> ColumnElement[bool]:
    """Parse ``--where`` expressions and compile them against this database's attribute types.

    Args:
        conn: an open connection (reads custom attribute types and data source names).
        expressions: one expression or several (ANDed); None or empty → every customer.
        tz: the zone for bare dates (default: the account zone).

    Returns:
        A boolean clause over ``customers`` to put in a ``WHERE``.

    Raises:
        FilterError: a syntax error, a value that does not fit its field, or an unknown data source.

    Example::

        clause = build_filter(conn, ["country in (US, DE)", "tag = vip"])
        ids = conn.execute(select(customers.c.id).where(clause)).scalars().all()
    """
    conditions = parse_filters(expressions)
    if not conditions:
        return true()
    check_sources(conn, conditions)
    types = attribute_types(conn) if any(c.field == "custom" for c in conditions) else {}
    return compile_filters(conditions, attribute_types=types, tz=tz)


def select_customer_ids(
    clause: ColumnElement[bool], customer_ids: Iterable[int] | None = None
) -> Select[Any]:
    """``SELECT customers.id`` matching ``clause``, optionally only among ``customer_ids``.

    Automations use this to test a handful of touched customers; bulk edit to list its targets.
    """
    query = select(customers.c.id).where(clause)
    if customer_ids is not None:
        ids = list(customer_ids)
        query = query.where(customers.c.id.in_(ids) if ids else false())
    return query.order_by(customers.c.id)
