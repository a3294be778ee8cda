"""Merging duplicate customers: merge, unmerge and the merge log (docs/merging.md).

A customer's fields are a projection of its linked source customers and its manual edits
(``storage.projection``), so a merge is a re-link:

1. snapshot FROM (its ``customers`` row, manual edits, contact ids, source customer ids with their old
   ``linked_at``) into a ``merge_events`` row;
2. re-link FROM's source customers to INTO with ``linked_at`` after every one of INTO's (the projection
   reads profile fields in link order, so INTO's own values win and FROM's fill the gaps; lead and trial
   dates are the earliest source value anyway);
3. move FROM's contacts, and its manual edits where they do not lose to INTO's (``merge_plan``);
4. delete FROM's ``customers`` row (a merged-away uuid resolves to nothing; metrics need no filter);
5. ``reproject`` INTO.

All of it inside the caller's transaction: a failure anywhere leaves both customers as they were.
An unmerge reverses the re-link from the snapshot: the same id and uuid come back with their own source
customers, edits and contacts. A re-sync keeps a merge because upserts find a source customer by
(data source, external id) and leave its ``customer_id`` alone.

``auto_merge`` merges the groups that detection finds (``storage.duplicates``) in batches: a few bulk
statements and one ``reproject`` per batch, not per customer.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update

from funnelsync.process_settings import paused_gc
from storage.duplicates import check_rules, find_duplicate_groups
from storage.ids import allocate_ids, new_uuid, new_uuids
from storage.merge_plan import (
    DEFAULT_RULES,
    EMAIL_AT_IMPORT,
    RULES,
    SNAPSHOT_VERSION,
    EditPlan,
    Group,
    plan_edit_moves,
    row_from_json,
    row_to_json,
)
from storage.outbox import (
    detect_changes,
    detect_duplicates,
    mark_merge_actions_done,
    mark_seen,
    pass_marks_on,
    pass_occurrences_on,
)
from storage.projection import reproject, write_filter_rows
from storage.schema import contacts, customers, data_sources, manual_edits, merge_events, source_customers
from storage.sql import chunks, fetch_all, ids_clause, ids_in, row_decoder
from storage.types import from_epoch_us
from storage.writers import DialectWriter

__all__ = [
    "DEFAULT_RULES",
    "EMAIL_AT_IMPORT",
    "RULES",
    "AutoMergeResult",
    "CustomerNotFound",
    "Group",
    "MergeError",
    "MergeEvent",
    "NothingToUnmerge",
    "auto_merge",
    "list_merge_events",
    "log_joins",
    "merge_batch",
    "merge_customers",
    "resolve_source_customer",
    "unmerge",
]

# Ids per IN (...) list: well under SQLite's 32,766 bound parameters and PostgreSQL's 65,535.
CHUNK = 2000
_EVENT_COLUMNS = ("uuid", "kind", "from_customer_uuid", "into_customer_uuid", "rule", "actor", "created_at",
                  "snapshot", "undone_at")
# Merges per transaction in ``auto_merge``: big enough to amortise the statements, small enough to keep a
# transaction (and SQLite's write lock) short.
AUTO_BATCH = 5000
_US = timedelta(microseconds=1)


class MergeError(ValueError):
    """A merge or unmerge that cannot be done, with the reason."""


class CustomerNotFound(MergeError, LookupError):
    """A customer (or source customer) named in a merge does not exist."""


class NothingToUnmerge(MergeError):
    """The source customer was never merged into that customer (it is the customer's own)."""


@dataclass(frozen=True, slots=True)
class MergeEvent:
    """One entry of the merge log."""

    uuid: str
    kind: str  # merge | unmerge
    from_customer_uuid: str
    into_customer_uuid: str
    rule: str | None
    actor: str
    created_at: datetime
    undone_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes ISO 8601)."""
        return {
            "uuid": self.uuid,
            "kind": self.kind,
            "from": self.from_customer_uuid,
            "into": self.into_customer_uuid,
            "rule": self.rule,
            "actor": self.actor,
            "created_at": self.created_at.isoformat(),
            "undone_at": self.undone_at.isoformat() if self.undone_at else None,
        }


@dataclass(slots=True)
class AutoMergeResult:
    """What ``auto_merge`` found and did."""

    groups: list[Group]
    dry_run: bool
    merged_customers: int = 0
    detection_seconds: float = 0.0
    merge_seconds: float = 0.0
    rules: tuple[str, ...] = DEFAULT_RULES
    skipped: int = 0  # customers gone or changed between detection and merge

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready summary with every group."""
        return {
            "dry_run": self.dry_run,
            "rules": list(self.rules),
            "groups": [g.as_json() for g in self.groups],
            "group_count": len(self.groups),
            "merged_customers": self.merged_customers,
            "skipped": self.skipped,
            "detection_seconds": round(self.detection_seconds, 3),
            "merge_seconds": round(self.merge_seconds, 3),
        }


def _now() -> datetime:
    return datetime.now(UTC)


# ---------------------------------------------------------------------------------------------------
# Merge


_CUSTOMER_COLUMNS = tuple(c.name for c in customers.columns)
_EDIT_COLUMNS = tuple(c.name for c in manual_edits.columns)


def _load_rows(conn: Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    decode = row_decoder(conn, customers, _CUSTOMER_COLUMNS)
    sql = f"SELECT {', '.join(_CUSTOMER_COLUMNS)} FROM customers WHERE id {{ids}}"  # noqa: S608  # nosec B608 # constant names
    out: dict[int, dict[str, Any]] = {}
    for part in chunks(list(ids), CHUNK):
        clause, params = ids_clause(conn, part)
        for raw in fetch_all(conn, sql.format(ids=clause), params):
            row = decode(raw)
            out[row["id"]] = row
    return out


def _load_edits(conn: Connection, ids: Sequence[int]) -> dict[int, dict[str, dict[str, Any]]]:
    decode = row_decoder(conn, manual_edits, _EDIT_COLUMNS)
    sql = f"SELECT {', '.join(_EDIT_COLUMNS)} FROM manual_edits WHERE customer_id {{ids}}"  # noqa: S608  # nosec B608 # constant names
    out: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for part in chunks(list(ids), CHUNK):
        clause, params = ids_clause(conn, part)
        for raw in fetch_all(conn, sql.format(ids=clause), params):
            row = decode(raw)
            out[row["customer_id"]][row["field"]] = row
    return out


def _column_by_customer(conn: Connection, sql: str, ids: Sequence[int]) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` (its ``{ids}`` the customer id list) for ``ids``, chunk by chunk."""
    out: list[tuple[Any, ...]] = []
    for part in chunks(list(ids), CHUNK):
        clause, params = ids_clause(conn, part)
        out.extend(fetch_all(conn, sql.format(ids=clause), params))
    return out


def _merged_effective(into: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """What INTO shows after ``other`` merged into it (used to plan the next merge into the same survivor)."""
    out = dict(into)
    for name, value in other.items():
        if name in ("tags", "custom", "lead_created_at", "free_trial_started_at"):
            continue
        if out.get(name) in (None, ""):
            out[name] = value
    for name in ("lead_created_at", "free_trial_started_at"):
        values = [v for v in (into.get(name), other.get(name)) if v is not None]
        out[name] = min(values) if values else None
    out["tags"] = list(dict.fromkeys([*(into.get("tags") or []), *(other.get("tags") or [])]))
    out["custom"] = {**(other.get("custom") or {}), **(into.get("custom") or {})}
    return out


def _edit_json_value(value: Any) -> Any:
    return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value


def merge_customers(
    conn: Connection, from_id: int, into_id: int, rule: str = "manual", actor: str = "cli"
) -> MergeEvent:
    """Merge customer ``from_id`` into customer ``into_id`` inside the caller's transaction.

    INTO keeps its uuid and its values; FROM's fill the gaps; lead and trial dates become the earliest
    of the two; tags and custom attributes are united (INTO wins a conflict); FROM's source customers,
    subscriptions, contacts and manual edits move to INTO (INTO's edits win a conflict). FROM's row is
    deleted and kept in the merge event's snapshot for ``unmerge``.

    Args:
        conn: a connection inside a transaction (``with engine.begin() as conn``).
        from_id: the customer merged away.
        into_id: the customer that survives.
        rule: what decided the merge: ``manual``, or the auto-merge rule(s).
        actor: who asked (``cli``, ``api``, ``auto``, a user name).

    Raises:
        CustomerNotFound: when either customer does not exist.
        MergeError: when both are the same customer.
    """
    return merge_batch(conn, [(from_id, into_id, rule)], actor=actor)[0]


def merge_batch(
    conn: Connection,
    merges: Sequence[tuple[int, int, str]],
    *,
    actor: str = "auto",
    skip_missing: bool = False,
) -> list[MergeEvent]:
    """Merge many (from_id, into_id, rule) pairs with a handful of bulk statements.

    Several pairs may share a survivor (a group of three or more); a survivor must not also be merged
    away in the same batch. The caller's transaction makes the whole batch one unit.

    Args:
        conn: a connection inside a transaction.
        merges: (from customer id, into customer id, rule) triples.
        actor: recorded on every merge event.
        skip_missing: drop pairs whose customers no longer exist (auto-merge after a concurrent change)
            instead of raising.

    Returns:
        The merge events written, in the order of ``merges`` (missing pairs left out).

    Raises:
        CustomerNotFound: a customer does not exist (unless ``skip_missing``).
        MergeError: a pair merges a customer into itself, a customer is merged away twice, or a
            survivor is merged away in the same batch.
    """
    with paused_gc():
        return _merge_batch(conn, merges, actor, skip_missing)


def _merge_batch(
    conn: Connection, merges: Sequence[tuple[int, int, str]], actor: str, skip_missing: bool
) -> list[MergeEvent]:
    from_ids = [f for f, _, _ in merges]
    into_ids = list(dict.fromkeys(i for _, i, _ in merges))
    for from_id, into_id, _ in merges:
        if from_id == into_id:
            raise MergeError(f"cannot merge customer {from_id} into itself")
    if len(set(from_ids)) != len(from_ids):
        raise MergeError("a customer cannot be merged away twice in one batch")
    if set(from_ids) & set(into_ids):
        raise MergeError("a survivor cannot be merged away in the same batch")
    rows = _load_rows(conn, from_ids)
    into_uuid: dict[int, str] = dict(
        _column_by_customer(conn, "SELECT id, uuid FROM customers WHERE id {ids}", into_ids)
    )
    todo: list[tuple[int, int, str]] = []
    for from_id, into_id, rule in merges:
        missing = [i for i in (from_id, into_id) if i not in rows and i not in into_uuid]
        if missing:
            if skip_missing:
                continue
            raise CustomerNotFound(f"customer {missing[0]} does not exist (merged away or deleted?)")
        todo.append((from_id, into_id, rule))
    if not todo:
        return []
    from_ids = [f for f, _, _ in todo]
    into_ids = list(dict.fromkeys(i for _, i, _ in todo))
    edits = _load_edits(conn, [*from_ids, *into_ids])

    sqlite = conn.dialect.name == "sqlite"

    def as_time(value: Any) -> datetime:
        return from_epoch_us(value) if sqlite else value

    sources_of: dict[int, list[tuple[int, datetime]]] = defaultdict(list)
    for sc_id, customer_id, linked_at in _column_by_customer(
        conn, "SELECT id, customer_id, linked_at FROM source_customers WHERE customer_id {ids} "
        "ORDER BY customer_id, linked_at, id", from_ids,
    ):
        sources_of[customer_id].append((sc_id, as_time(linked_at)))
    last_linked: dict[int, datetime] = {
        customer_id: as_time(last)
        for customer_id, last in _column_by_customer(
            conn, "SELECT customer_id, max(linked_at) FROM source_customers WHERE customer_id {ids} "
            "GROUP BY customer_id", into_ids,
        )
    }
    contacts_of: dict[int, list[int]] = defaultdict(list)
    for contact_id, customer_id in _column_by_customer(
        conn, "SELECT id, customer_id FROM contacts WHERE customer_id {ids} ORDER BY id", from_ids
    ):
        contacts_of[customer_id].append(contact_id)

    now = _now()
    event_rows: list[dict[str, Any]] = []
    relinks: list[dict[str, Any]] = []
    contact_moves: list[dict[str, Any]] = []
    # Keyed by (customer id, field): a second merge into the same survivor rewrites the first one's edit.
    edit_deletes: dict[tuple[int, str], dict[str, Any]] = {}
    edit_writes: dict[tuple[int, str], dict[str, Any]] = {}
    events: list[MergeEvent] = []
    # Only survivors whose merges involve manual edits need their effective fields to plan the edits
    # (most merges have none): read those rows, and skip the rest.
    needs_plan = {i for f, i, _ in todo if edits.get(f) or edits.get(i)}
    into_state = {i: dict(r) for i, r in _load_rows(conn, sorted(needs_plan)).items()}
    into_edits = {i: {f: e["value"] for f, e in edits.get(i, {}).items()} for i in into_ids}
    event_uuids = iter(new_uuids("mrg", len(todo)))
    for from_id, into_id, rule in todo:
        from_row = rows[from_id]
        from_edit_rows = edits.get(from_id, {})
        if into_id in needs_plan:
            plan = plan_edit_moves(
                into_state[into_id], into_edits[into_id], from_row, {f: e["value"] for f, e in from_edit_rows.items()}
            )
            into_state[into_id] = _merged_effective(into_state[into_id], from_row)
        else:
            plan = EditPlan()
        into_changes: dict[str, dict[str, Any]] = {}
        for field_name in plan.move:
            source_edit = from_edit_rows[field_name]
            into_changes[field_name] = {"before": None, "after": source_edit["value"]}
            edit_writes[(into_id, field_name)] = {
                "customer_id": into_id, "field": field_name, "value": source_edit["value"],
                "actor": source_edit["actor"], "created_at": source_edit["created_at"],
            }
            into_edits[into_id][field_name] = source_edit["value"]
        for field_name, value in plan.set_into.items():
            after = _edit_json_value(value)
            before = edit_writes.get((into_id, field_name)) or edits.get(into_id, {}).get(field_name)
            into_changes[field_name] = {"before": row_to_json(manual_edits, before) if before else None, "after": after}
            if field_name in edits.get(into_id, {}):
                edit_deletes[(into_id, field_name)] = {"b_customer_id": into_id, "b_field": field_name}
            edit_writes[(into_id, field_name)] = {
                "customer_id": into_id, "field": field_name, "value": after, "actor": f"merge:{actor}",
                "created_at": now,
            }
            into_edits[into_id][field_name] = after
        # Put FROM's source customers after all of INTO's in link order, keeping their own order.
        base = max(now, last_linked.get(into_id, now) + _US)
        moved_sources = sources_of.get(from_id, [])
        for rank, (sc_id, _) in enumerate(moved_sources):
            relinks.append({"id": sc_id, "customer_id": into_id, "linked_at": base + rank * _US})
        if moved_sources:
            last_linked[into_id] = base + (len(moved_sources) - 1) * _US
        for contact_id in contacts_of.get(from_id, []):
            contact_moves.append({"id": contact_id, "customer_id": into_id})
        snapshot = {
            "version": SNAPSHOT_VERSION,
            "customer": row_to_json(customers, from_row),
            "manual_edits": [row_to_json(manual_edits, e) for e in from_edit_rows.values()],
            "source_customers": [
                {"id": sc_id, "linked_at": linked_at.astimezone(UTC).isoformat()} for sc_id, linked_at in moved_sources
            ],
            "contacts": contacts_of.get(from_id, []),
            "into_edits": into_changes,
        }
        event = MergeEvent(
            uuid=next(event_uuids), kind="merge", from_customer_uuid=from_row["uuid"],
            into_customer_uuid=into_uuid[into_id], rule=rule, actor=actor, created_at=now,
        )
        events.append(event)
        event_rows.append(
            {"uuid": event.uuid, "kind": "merge", "from_customer_uuid": event.from_customer_uuid,
             "into_customer_uuid": event.into_customer_uuid, "rule": rule, "actor": actor,
             "created_at": now, "snapshot": json.dumps(snapshot), "undone_at": None}
        )

    writer = DialectWriter(conn)
    writer.insert("merge_events", _EVENT_COLUMNS, writer.rows(_EVENT_COLUMNS, event_rows))
    writer.update("source_customers", "id", ("customer_id", "linked_at"),
                  writer.rows(("id", "customer_id", "linked_at"), relinks))
    writer.update("contacts", "id", ("customer_id",), writer.rows(("id", "customer_id"), contact_moves))
    from_with_edits = [f for f in from_ids if edits.get(f)]
    for part in chunks(from_with_edits, CHUNK):
        conn.execute(delete(manual_edits).where(ids_in(conn, manual_edits.c.customer_id, part)))
    if edit_deletes:
        conn.execute(
            delete(manual_edits).where(
                manual_edits.c.customer_id == bindparam("b_customer_id"), manual_edits.c.field == bindparam("b_field")
            ),
            list(edit_deletes.values()),
        )
    if edit_writes:
        conn.execute(insert(manual_edits), list(edit_writes.values()))
    pass_marks_on(conn, [(f, i) for f, i, _ in todo])
    pass_occurrences_on(conn, [(e.from_customer_uuid, e.into_customer_uuid) for e in events])
    for part in chunks(from_ids, CHUNK):
        clause, params = ids_clause(conn, part)
        conn.exec_driver_sql(f"DELETE FROM customers WHERE id {clause}", params)  # noqa: S608  # nosec B608 # our markers
    reproject(conn, into_ids)
    detect_changes(conn, into_ids)
    return events


# ---------------------------------------------------------------------------------------------------
# Joins: new records put straight onto an existing customer


def log_joins(
    conn: Connection,
    joins: Mapping[int, Sequence[int]],
    linked_at: datetime,
    *,
    rule: str = EMAIL_AT_IMPORT,
    actor: str = "import",
) -> list[MergeEvent]:
    """Log, as merges, new source customers that were linked to an existing customer instead of their own.

    An import that finds a new record's email on another source's customer links the record to it: a
    merge of the customer the record would have had into that one, done as the record arrives. Each
    customer's records of one call get one merge event, whose snapshot holds that would-be customer (a
    fresh id and uuid, no values of its own: the projection of its records gives them) and the records,
    so ``unmerge`` separates them into it like any merged-away customer, and the merge log lists it.

    Args:
        conn: a connection inside the transaction that linked the records.
        joins: existing customer id → the ids of the new source customers linked to it.
        linked_at: when they were linked (their ``linked_at``).
        rule: the rule recorded on the events.
        actor: who imported.

    Returns:
        The merge events written.
    """
    into_ids = [i for i, records in joins.items() if records]
    if not into_ids:
        return []
    into_uuid: dict[int, str] = {}
    for part in chunks(into_ids, CHUNK):
        for row in conn.execute(select(customers.c.id, customers.c.uuid).where(ids_in(conn, customers.c.id, part))):
            into_uuid[row.id] = row.uuid
    ids = iter(allocate_ids(conn, "customers", len(into_ids)))
    uuids = iter(new_uuids("cus", len(into_ids)))
    now = _now()
    link_time = linked_at.astimezone(UTC).isoformat()
    events: list[MergeEvent] = []
    rows: list[dict[str, Any]] = []
    for into_id in into_ids:
        would_be = {"id": next(ids), "uuid": next(uuids), "created_at": linked_at, "updated_at": linked_at,
                    "status": "New_Lead", "tags": [], "custom": {}, "has_subscriptions": False}
        snapshot = {
            "version": SNAPSHOT_VERSION,
            "customer": row_to_json(customers, would_be),
            "manual_edits": [],
            "source_customers": [{"id": sc_id, "linked_at": link_time} for sc_id in joins[into_id]],
            # Their contacts follow the records back (``unmerge`` moves the contacts of moved-back records).
            "contacts": [],
            "into_edits": {},
        }
        event = MergeEvent(uuid=new_uuid("mrg"), kind="merge", from_customer_uuid=would_be["uuid"],
                           into_customer_uuid=into_uuid[into_id], rule=rule, actor=actor, created_at=now)
        events.append(event)
        rows.append({"uuid": event.uuid, "kind": "merge", "from_customer_uuid": event.from_customer_uuid,
                     "into_customer_uuid": event.into_customer_uuid, "rule": rule, "actor": actor,
                     "created_at": now, "snapshot": snapshot, "undone_at": None})
    conn.execute(insert(merge_events), rows)
    return events


# ---------------------------------------------------------------------------------------------------
# Unmerge


def resolve_source_customer(conn: Connection, ref: int | tuple[int, str] | str) -> int:
    """The id of a source customer named by id, (data source id, external id) or ``SOURCE:EXTERNAL_ID``.

    ``SOURCE`` is a data source name or ``ds_…`` uuid (source names cannot hold a colon, external ids can).

    Raises:
        CustomerNotFound: when no such source customer exists.
    """
    sc = source_customers
    if isinstance(ref, int):
        found = conn.execute(select(sc.c.id).where(sc.c.id == ref)).scalar()
        what = f"source customer {ref}"
    elif isinstance(ref, tuple):
        data_source_id, external_id = ref
        found = conn.execute(
            select(sc.c.id).where(sc.c.data_source_id == data_source_id, sc.c.external_id == external_id)
        ).scalar()
        what = f"source customer {external_id!r} of data source {data_source_id}"
    else:
        source, sep, external_id = ref.partition(":")
        if not sep or not source or not external_id:
            raise CustomerNotFound(f"{ref!r}: expected SOURCE:EXTERNAL_ID")
        ds = data_sources
        found = conn.execute(
            select(sc.c.id)
            .join(ds, ds.c.id == sc.c.data_source_id)
            .where((ds.c.name == source) | (ds.c.uuid == source), sc.c.external_id == external_id)
        ).scalar()
        what = f"no record {external_id!r} in data source {source!r}"
        if found is None:
            raise CustomerNotFound(what)
    if found is None:
        raise CustomerNotFound(f"{what} does not exist")
    return int(found)


def unmerge(
    conn: Connection,
    customer_id: int,
    source_customer_ref: int | tuple[int, str] | str,
    actor: str = "cli",
) -> MergeEvent:
    """Undo the merge that brought a source customer into ``customer_id``, inside the caller's transaction.

    The customer merged away comes back exactly as it was (same id and uuid, its own source customers,
    manual edits and contacts); edits the merge wrote on the survivor are put back unless they were
    changed since. Both are re-projected and an ``unmerge`` event is logged; the merge event is marked
    undone. If several merges chained (A into B, then B into C), the latest one that moved the source
    customer is undone: unmerging A's record out of C brings back B (with A's record), a second unmerge
    out of B brings back A.

    Args:
        conn: a connection inside a transaction.
        customer_id: the surviving customer.
        source_customer_ref: the source customer to separate: id, (data source id, external id), or
            ``SOURCE:EXTERNAL_ID``.
        actor: recorded on the unmerge event.

    Returns:
        The unmerge event (``from`` is the restored customer, ``into`` the survivor).

    Raises:
        CustomerNotFound: the customer or source customer does not exist.
        NothingToUnmerge: the source customer does not belong to the customer, or was never merged in.
    """
    sc = source_customers
    sc_id = resolve_source_customer(conn, source_customer_ref)
    into = conn.execute(select(customers).where(customers.c.id == customer_id)).mappings().first()
    if into is None:
        raise CustomerNotFound(f"customer {customer_id} does not exist")
    owner = conn.execute(select(sc.c.customer_id).where(sc.c.id == sc_id)).scalar_one()
    if owner != customer_id:
        owner_uuid = conn.execute(select(customers.c.uuid).where(customers.c.id == owner)).scalar()
        raise NothingToUnmerge(
            f"that source customer belongs to customer {owner_uuid}, not to {into['uuid']}"
        )
    event_row = None
    for row in conn.execute(
        select(merge_events)
        .where(
            merge_events.c.into_customer_uuid == into["uuid"],
            merge_events.c.kind == "merge",
            merge_events.c.undone_at.is_(None),
        )
        .order_by(merge_events.c.id.desc())
    ).mappings():
        if any(s["id"] == sc_id for s in (row["snapshot"] or {}).get("source_customers", [])):
            event_row = row
            break
    if event_row is None:
        raise NothingToUnmerge(
            f"that source customer was not merged into {into['uuid']}: it is the customer's own record"
        )
    snapshot = event_row["snapshot"]
    restored = row_from_json(customers, snapshot["customer"])
    taken = conn.execute(
        select(customers.c.id, customers.c.uuid).where(
            (customers.c.id == restored["id"]) | (customers.c.uuid == restored["uuid"])
        )
    ).first()
    if taken is not None and taken.uuid == restored["uuid"]:
        raise MergeError(f"customer {restored['uuid']} exists already: the merge was undone before")
    if taken is not None:
        # The integer id was handed out again (never on PostgreSQL; possible on SQLite after a restore):
        # the uuid is what users know, so keep it and take a fresh id.
        restored.pop("id")
        from_id = int(conn.execute(insert(customers).values(**restored).returning(customers.c.id)).scalar_one())
    else:
        conn.execute(insert(customers).values(**restored))
        from_id = restored["id"]
    # Its tag and attribute filter rows went with it at the merge; the re-projection below writes them
    # only for a customer whose fields change, and the restored row is already its own projection.
    write_filter_rows(conn, [{**restored, "id": from_id}], replace=True)

    relinks = [
        {"b_id": s["id"], "b_customer_id": from_id, "b_linked_at": datetime.fromisoformat(s["linked_at"]),
         "b_owner": customer_id}
        for s in snapshot.get("source_customers", [])
    ]
    moved_back: list[int] = []
    for part in chunks(relinks, CHUNK):
        ids = [r["b_id"] for r in part]
        current = {
            row.id for row in conn.execute(select(sc.c.id).where(sc.c.id.in_(ids), sc.c.customer_id == customer_id))
        }
        still_here = [r for r in part if r["b_id"] in current]
        if still_here:
            conn.execute(
                update(sc)
                .where(sc.c.id == bindparam("b_id"))
                .values(customer_id=bindparam("b_customer_id"), linked_at=bindparam("b_linked_at")),
                still_here,
            )
            moved_back.extend(r["b_id"] for r in still_here)
    contact_ids = list(snapshot.get("contacts", []))
    for part in chunks(contact_ids, CHUNK):
        conn.execute(
            update(contacts)
            .where(contacts.c.id.in_(part), contacts.c.customer_id == customer_id)
            .values(customer_id=from_id)
        )
    # Contacts a re-sync reported for the moved-back records after the merge follow their records.
    for part in chunks(moved_back, CHUNK):
        conn.execute(
            update(contacts)
            .where(contacts.c.source_customer_id.in_(part), contacts.c.customer_id == customer_id)
            .values(customer_id=from_id)
        )
    # Edits the merge wrote on the survivor: put back what was there, unless someone changed them since.
    current_edits = _load_edits(conn, [customer_id]).get(customer_id, {})
    for field_name, change in (snapshot.get("into_edits") or {}).items():
        now_edit = current_edits.get(field_name)
        if now_edit is None or now_edit["value"] != change["after"]:
            continue
        conn.execute(
            delete(manual_edits).where(manual_edits.c.customer_id == customer_id, manual_edits.c.field == field_name)
        )
        if change.get("before") is not None:
            before = row_from_json(manual_edits, change["before"])
            before.pop("id", None)
            before["customer_id"] = customer_id
            conn.execute(insert(manual_edits).values(**before))
    restored_edits = []
    for data in snapshot.get("manual_edits", []):
        edit = row_from_json(manual_edits, data)
        edit.pop("id", None)
        edit["customer_id"] = from_id
        restored_edits.append(edit)
    if restored_edits:
        conn.execute(insert(manual_edits), restored_edits)

    now = _now()
    conn.execute(update(merge_events).where(merge_events.c.id == event_row["id"]).values(undone_at=now))
    event = MergeEvent(
        uuid=new_uuid("mrg"), kind="unmerge", from_customer_uuid=restored["uuid"],
        into_customer_uuid=into["uuid"], rule=event_row["rule"], actor=actor, created_at=now,
    )
    conn.execute(
        insert(merge_events).values(
            uuid=event.uuid, kind="unmerge", from_customer_uuid=event.from_customer_uuid,
            into_customer_uuid=event.into_customer_uuid, rule=event.rule, actor=actor, created_at=now,
            snapshot={"version": SNAPSHOT_VERSION, "merge_event": event_row["uuid"], "source_customers": moved_back},
        )
    )
    reproject(conn, [customer_id, from_id])
    # An unmerge fires nothing: the customer that comes back is taken as seen as it is.
    mark_seen(conn, [customer_id, from_id])
    pass_occurrences_on(conn, [(into["uuid"], restored["uuid"])])
    return event


# ---------------------------------------------------------------------------------------------------
# Automatic merge and the log


def _duplicates_found(engine: Engine, groups: list[Group]) -> None:
    """The ``duplicate_found`` automations: an occurrence per group; a rule with a ``merge`` action merges
    its new groups here, in the same transaction (logged as its own merges, undoable like any)."""
    with engine.begin() as conn:
        for name, found in detect_duplicates(conn, groups).items():
            pairs = [(m.id, g.survivor.id, g.rule) for g in found for m in g.others]
            if pairs:
                merge_batch(conn, pairs, actor=f"automation:{name}", skip_missing=True)
            mark_merge_actions_done(conn, name, found, _now())


def auto_merge(
    engine: Engine,
    rules: Iterable[str] = DEFAULT_RULES,
    dry_run: bool = False,
    *,
    actor: str = "auto",
    batch_size: int = AUTO_BATCH,
    progress: Callable[[int, int], None] | None = None,
) -> AutoMergeResult:
    """Detect duplicate groups and merge each into its survivor (the step run after every sync).

    Detection reads in one connection; merges then run in transactions of ``batch_size`` merges each
    (bulk statements, one re-projection per batch). A customer deleted or merged between detection and
    its batch is skipped, not an error.

    Args:
        engine: the database.
        rules: rule names (see ``find_duplicate_groups``).
        dry_run: only detect; write nothing.
        actor: recorded on the merge events.
        batch_size: merges per transaction.
        progress: called with (customers merged so far, total) after each batch.

    Returns:
        The groups found and what was merged.
    """
    wanted = check_rules(rules)
    started = time.perf_counter()
    with engine.connect() as conn:
        groups = find_duplicate_groups(conn, wanted)
    result = AutoMergeResult(groups=groups, dry_run=dry_run, rules=wanted)
    result.detection_seconds = time.perf_counter() - started
    if not dry_run and groups:
        _duplicates_found(engine, groups)
    if dry_run or not groups:
        return result
    started = time.perf_counter()
    pairs = [(m.id, g.survivor.id, g.rule) for g in groups for m in g.others]
    for part in chunks(pairs, batch_size):
        with engine.begin() as conn:
            events = merge_batch(conn, part, actor=actor, skip_missing=True)
        result.merged_customers += len(events)
        result.skipped += len(part) - len(events)
        if progress is not None:
            progress(result.merged_customers + result.skipped, len(pairs))
    result.merge_seconds = time.perf_counter() - started
    return result


def list_merge_events(
    conn: Connection, customer_uuid: str | None = None, limit: int = 100
) -> list[MergeEvent]:
    """The merge log, newest first; with ``customer_uuid``, the events where it is either side."""
    query = select(merge_events).order_by(merge_events.c.id.desc()).limit(limit)
    if customer_uuid:
        query = query.where(
            (merge_events.c.from_customer_uuid == customer_uuid) | (merge_events.c.into_customer_uuid == customer_uuid)
        )
    return [
        MergeEvent(
            uuid=row.uuid, kind=row.kind, from_customer_uuid=row.from_customer_uuid,
            into_customer_uuid=row.into_customer_uuid, rule=row.rule, actor=row.actor,
            created_at=row.created_at, undone_at=row.undone_at,
        )
        for row in conn.execute(query)
    ]
