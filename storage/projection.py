"""Customer fields are a projection of their source customers, subscriptions and manual edits.

``project`` is the pure rule; ``reproject`` applies it to the customers a batch touched. Because the
stored customer row is always recomputable, a re-sync (which rewrites source customers) can never
erase a manual edit, and a merge or unmerge is only a matter of re-linking source customers.

The rules:
- a manual edit wins;
- ``lead_created_at`` and ``free_trial_started_at``: the earliest value any linked source reports;
- other profile fields: the first non-empty value in link order (``linked_at``, then id), so the
  survivor of a merge keeps its own values and takes the other's only where it has none;
- ``subscriber_since``: the earliest ``first_paid_at`` of any linked subscription;
- tags: the union of the sources' tags, plus tags added by hand, minus tags removed by hand;
- custom attributes: united, the earlier-linked source winning a conflict, edits over all;
- status: ``funnelsync.status.derive_status``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from funnelsync.normalize import normalize_email, website_domain
from funnelsync.records import PROFILE_FIELDS
from funnelsync.status import derive_status
from funnelsync.timeutil import parse_iso
from storage.schema import (
    custom_attribute_definitions,
    customer_attributes,
    customer_tags,
    customers,
    source_customers,
)
from storage.sql import dialect_insert, fetch_all, ids_clause, ids_in, row_decoder, sqlite_json
from storage.types import from_epoch_us
from storage.writers import DialectWriter

CHUNK = 2000

# The columns of ``customers`` that the projection owns.
PROJECTED_COLUMNS = (
    *PROFILE_FIELDS,
    "email_norm",
    "website_domain",
    "status",
    "lead_created_at",
    "free_trial_started_at",
    "subscriber_since",
    "tags",
    "custom",
    "has_subscriptions",
)
EDITABLE_DATE_FIELDS = ("lead_created_at", "free_trial_started_at")


def project(
    sources: Sequence[Mapping[str, Any]],
    subs: Iterable[Mapping[str, Any]],
    edits: Mapping[str, Any],
) -> dict[str, Any]:
    """Compute a customer's effective fields.

    Args:
        sources: the linked source customers, in link order, each a mapping with the profile fields,
            ``lead_created_at``, ``free_trial_started_at``, ``tags`` and ``custom``.
        subs: their subscriptions, each with ``state`` and ``first_paid_at``.
        edits: manual edits by field name (``owner``, ``lead_created_at``, ``custom.plan``,
            ``tag.vip`` …), values already decoded (datetimes as aware datetimes).
    """
    out: dict[str, Any] = {}
    for name in PROFILE_FIELDS:
        if name in edits:
            out[name] = edits[name]
            continue
        value = None
        for src in sources:
            candidate = src.get(name)
            if candidate not in (None, ""):
                value = candidate
                break
        out[name] = value
    for name in EDITABLE_DATE_FIELDS:
        if name in edits:
            out[name] = edits[name]
        else:
            values = [s[name] for s in sources if s.get(name) is not None]
            out[name] = min(values) if values else None
    sub_list = list(subs)
    paid = [s["first_paid_at"] for s in sub_list if s.get("first_paid_at") is not None]
    out["subscriber_since"] = min(paid) if paid else None
    out["has_subscriptions"] = bool(sub_list)
    out["status"] = derive_status(
        ((s["state"], s.get("first_paid_at") is not None) for s in sub_list), out["lead_status"]
    )
    if out["status"] in ("Active", "Past_Due", "Cancelled"):
        # A lead status describes a lead; on a subscriber it is kept for history but not shown.
        pass
    out["email_norm"] = normalize_email(out["email"])
    out["website_domain"] = website_domain(out["website_url"])

    tags: dict[str, None] = {}
    for src in sources:
        for tag in src.get("tags") or ():
            tags.setdefault(tag, None)
    custom: dict[str, Any] = {}
    for src in reversed(sources):
        custom.update(src.get("custom") or {})
    for key, value in edits.items():
        if key.startswith("tag."):
            tag = key[4:]
            if value:
                tags.setdefault(tag, None)
            else:
                tags.pop(tag, None)
        elif key.startswith("custom."):
            if value is None:
                custom.pop(key[7:], None)
            else:
                custom[key[7:]] = value
    out["tags"] = list(tags)
    out["custom"] = custom
    return out


def decode_edit(field: str, value: Any) -> Any:
    """Turn a stored (JSON) manual edit value into the projection's type."""
    if field in EDITABLE_DATE_FIELDS and isinstance(value, str):
        return parse_iso(value)
    return value


def reproject(conn: Connection, customer_ids: Iterable[int]) -> int:
    """Recompute and store the projection of the given customers; return how many changed.

    Reads each chunk's source customers, subscriptions, edits and current rows with four queries and
    writes only the rows whose projection changed (one executemany), so a batch costs a handful of
    statements whatever its size.
    """
    ids = sorted(set(customer_ids))
    changed = 0
    for start in range(0, len(ids), CHUNK):
        changed += _reproject_chunk(conn, ids[start : start + CHUNK])
    return changed


_SOURCE_COLUMNS = (*PROFILE_FIELDS, "lead_created_at", "free_trial_started_at", "tags", "custom")
_SOURCES_SQL = (
    f"SELECT customer_id, {', '.join(_SOURCE_COLUMNS)} FROM source_customers WHERE customer_id {{ids}} "  # noqa: S608  # nosec B608 # constant names
    "ORDER BY customer_id, linked_at, id"
)
_SUBS_SQL = (
    "SELECT sc.customer_id, s.state, s.first_paid_at FROM subscriptions AS s "
    "JOIN source_customers AS sc ON sc.id = s.source_customer_id WHERE sc.customer_id {ids}"
)
_EDITS_SQL = "SELECT customer_id, field, value FROM manual_edits WHERE customer_id {ids}"
_CURRENT_SQL = f"SELECT id, {', '.join(PROJECTED_COLUMNS)} FROM customers WHERE id {{ids}}"  # noqa: S608  # nosec B608 # constant names


def _reproject_chunk(conn: Connection, ids: list[int]) -> int:
    sqlite = conn.dialect.name == "sqlite"
    clause, params = ids_clause(conn, ids)
    sources_by_customer: dict[int, list[dict[str, Any]]] = defaultdict(list)
    decode_source = row_decoder(conn, source_customers, _SOURCE_COLUMNS)
    for row in fetch_all(conn, _SOURCES_SQL.format(ids=clause), params):
        sources_by_customer[row[0]].append(decode_source(row[1:]))
    subs_by_customer: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for customer_id, state, first_paid_at in fetch_all(conn, _SUBS_SQL.format(ids=clause), params):
        if sqlite and first_paid_at is not None:
            first_paid_at = from_epoch_us(first_paid_at)
        subs_by_customer[customer_id].append({"state": state, "first_paid_at": first_paid_at})
    edits_by_customer: dict[int, dict[str, Any]] = defaultdict(dict)
    for customer_id, field, value in fetch_all(conn, _EDITS_SQL.format(ids=clause), params):
        if sqlite and value is not None:
            value = sqlite_json(value)
        edits_by_customer[customer_id][field] = decode_edit(field, value)
    decode_current = row_decoder(conn, customers, PROJECTED_COLUMNS)
    current = {row[0]: decode_current(row[1:]) for row in fetch_all(conn, _CURRENT_SQL.format(ids=clause), params)}
    # Grouped by the columns that changed, each group written with only those columns: SQLite rewrites the
    # entries of every index holding a column the SET names, changed or not (and runs the metric counts'
    # trigger), which made writing all projected columns ten times the cost of writing the one a merge
    # changes. Tags and attributes are mirrored again only where they changed.
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    filtered: list[dict[str, Any]] = []
    changed = 0
    now = datetime.now(timezone.utc)
    for cid in ids:
        if cid not in current:
            continue
        fresh = project(sources_by_customer.get(cid, []), subs_by_customer.get(cid, []), edits_by_customer.get(cid, {}))
        old = current[cid]
        columns = tuple(c for c in PROJECTED_COLUMNS if _differs(old[c], fresh[c]))
        if not columns:
            continue
        changed += 1
        fresh["id"] = cid
        fresh["updated_at"] = now
        fresh["custom"] = jsonable_custom(fresh["custom"])
        by_columns[columns].append(fresh)
        if "tags" in columns or "custom" in columns:
            filtered.append(fresh)
    if not changed:
        return 0
    writer = DialectWriter(conn)
    for columns, rows in by_columns.items():
        written = ("id", *columns, "updated_at")
        writer.update("customers", "id", written[1:], writer.rows(written, rows))
    if filtered:
        write_filter_rows(conn, filtered, replace=True)
    return changed


def _differs(old: Any, new: Any) -> bool:
    if isinstance(new, dict):
        before = json.dumps(old, sort_keys=True, default=str)
        return before != json.dumps(jsonable_custom(new), sort_keys=True, default=str)
    return old != new


def jsonable_custom(custom: Mapping[str, Any]) -> dict[str, Any]:
    """Custom attribute values as JSON can hold them (datetimes as ISO 8601, decimals as numbers)."""
    if not custom:
        return {}
    out: dict[str, Any] = {}
    for key, value in custom.items():
        if isinstance(value, datetime):
            out[key] = value.astimezone(timezone.utc).isoformat()
        elif isinstance(value, Decimal):
            out[key] = float(value)
        else:
            out[key] = value
    return out




def register_attribute_types(conn: Connection, types: Mapping[str, str]) -> dict[str, str]:
    """Remember the type of each custom attribute key the first time it is seen.

    Returns the keys registered with another type than asked, with their registered type (a key is never
    re-typed here). Two writers seeing a key for the first time at once both try to register it: the later
    one finds the earlier one's row (an insert that skips existing keys, not a unique-key error, which was
    a 500 for concurrent ``POST /v1/customers``), and its caller refuses the value when the types differ.
    """
    if not types:
        return {}
    known = attribute_types(conn, list(types))
    conflicts = {key: kind for key, kind in known.items() if kind != types[key]}
    now = datetime.now(timezone.utc)
    new = [{"key": k, "type": t, "created_at": now} for k, t in types.items() if k not in known]
    if not new:
        return conflicts
    defs = custom_attribute_definitions
    stmt = dialect_insert(conn, defs).on_conflict_do_nothing(index_elements=[defs.c.key])
    inserted = conn.execute(stmt, new).rowcount
    if inserted != len(new):
        stored = attribute_types(conn, [row["key"] for row in new])
        conflicts.update({key: kind for key, kind in stored.items() if kind != types[key]})
    return conflicts


def attribute_types(conn: Connection, keys: Sequence[str] | None = None) -> dict[str, str]:
    """The declared type (String, Integer, Decimal, Timestamp, Boolean) of each known custom attribute key,
    of all of them or only of ``keys``."""
    defs = custom_attribute_definitions
    query = select(defs.c.key, defs.c.type)
    if keys is not None:
        if not keys:
            return {}
        query = query.where(defs.c.key.in_(list(keys)))
    return {row.key: row.type for row in conn.execute(query)}


def _timestamp_keys(conn: Connection, keys: set[str]) -> set[str]:
    if not keys:
        return set()
    return {
        row.key
        for row in conn.execute(
            select(custom_attribute_definitions.c.key).where(
                custom_attribute_definitions.c.key.in_(list(keys)),
                custom_attribute_definitions.c.type == "Timestamp",
            )
        )
    }


def write_filter_rows(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, id_key: str = "id", replace: bool
) -> None:
    """Mirror projected tags and custom attributes into ``customer_tags`` / ``customer_attributes``."""
    ids = [r[id_key] for r in rows]
    if replace and ids:
        for start in range(0, len(ids), CHUNK):
            part = ids[start : start + CHUNK]
            conn.execute(delete(customer_tags).where(ids_in(conn, customer_tags.c.customer_id, part)))
            conn.execute(delete(customer_attributes).where(ids_in(conn, customer_attributes.c.customer_id, part)))
    tag_rows = [{"customer_id": r[id_key], "tag": t} for r in rows for t in (r["tags"] or ())]
    if tag_rows:
        conn.execute(insert(customer_tags), tag_rows)
    keys = {k for r in rows for k in (r["custom"] or {})}
    if not keys:
        return
    ts_keys = _timestamp_keys(conn, keys)
    attr_rows = []
    for r in rows:
        for key, value in (r["custom"] or {}).items():
            attr_rows.append(attribute_row(r[id_key], key, value, key in ts_keys))
    if attr_rows:
        conn.execute(insert(customer_attributes), attr_rows)


def attribute_row(customer_id: int, key: str, value: Any, is_timestamp: bool) -> dict[str, Any]:
    """One ``customer_attributes`` row: the value in the typed column(s) filters compare on."""
    row: dict[str, Any] = {
        "customer_id": customer_id, "key": key, "value_text": None,
        "value_number": None, "value_time": None, "value_bool": None,
    }
    if value is None:
        return row
    if isinstance(value, bool):
        row["value_bool"] = value
        row["value_text"] = "true" if value else "false"
    elif isinstance(value, (int, float, Decimal)):
        row["value_number"] = float(value)
        row["value_text"] = str(value)
    elif isinstance(value, datetime):
        row["value_time"] = value.astimezone(timezone.utc)
        row["value_text"] = row["value_time"].isoformat()
    else:
        row["value_text"] = str(value)
        if is_timestamp:
            try:
                row["value_time"] = parse_iso(str(value))
            except ValueError:
                pass
    return row
