"""Detection of automation occurrences and the outbox of their deliveries.

An occurrence is (rule, customer, trigger, discriminator): the discriminator is the date reached (the
lead's creation, the trial's start or end, the first payment) or the status transition. Its id is a
digest of the four, so an occurrence found twice (a re-sync, a re-import, a second run) is inserted
once: occurrences and their deliveries go in with ``ON CONFLICT DO NOTHING``.

``detect_changes`` runs in the transaction of the change (the upsert batch, the manual or bulk edit):
it compares each customer with what detection last saw of it (``automation_marks``) and moves the
marks on in the same transaction, so a rolled-back batch fires nothing and a committed one is never
looked at again. A date, once seen, stays seen: a merge that finds an earlier date, or a source that
drops the date and reports it again, is not a new step. While no rule of a change trigger is stored
nothing is kept; the marks are taken afresh from the customers when such a rule is applied
(``seed_marks``), which is also why a rule never fires for what happened before it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, String, Text, and_, any_, bindparam, cast, func, literal, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from storage.automation_rules import CHANGE_TRIGGERS, StoredRule, list_rules
from storage.filter_grammar import FilterError
from storage.filters import build_filter, select_customer_ids
from storage.schema import (
    automation_deliveries,
    automation_marks,
    automation_occurrences,
    customers,
)
from storage.sql import dialect_insert, fetch_all, ids_in, text_array
from storage.types import to_epoch_us
from storage.writers import DialectWriter

log = logging.getLogger(__name__)

CHUNK = 5_000
DATE_TRIGGERS = (
    ("lead_created", "lead_created_at"),
    ("trial_started", "free_trial_started_at"),
    ("trial_converted", "subscriber_since"),
)
MARK_COLUMNS = ("lead_created_at", "free_trial_started_at", "subscriber_since")
OCCURRENCE_COLUMNS = ("id", "rule_name", "trigger", "customer_uuid", "discriminator", "occurred_at", "detected_at")
DELIVERY_COLUMNS = ("occurrence_id", "action_index", "kind", "status", "attempts", "next_attempt_at", "updated_at")


def occurrence_id(rule: str, customer_uuid: str, trigger: str, discriminator: str) -> str:
    """The stable id of an occurrence (also the webhook's ``Idempotency-Key``)."""
    digest = hashlib.sha256("\x1f".join((rule, customer_uuid, trigger, discriminator)).encode()).hexdigest()
    return "occ_" + digest[:32]


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def moment(value: datetime) -> str:
    """The discriminator of a date reached: its UTC microseconds since the epoch (the same whichever
    path finds it: a batch, a backfill, a run)."""
    return str(to_epoch_us(value))


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One customer reaching one trigger (before it is matched with rules).

    ``occurred_at`` and ``created_at`` are as the database hands them (epoch microseconds on SQLite,
    datetimes on PostgreSQL): a batch of a large import never converts them.
    """

    customer_id: int
    customer_uuid: str
    trigger: str
    discriminator: str
    occurred_at: Any
    created_at: Any = None
    unseen: bool = False
    # status_changed only: the transition, for the rule's ``from``/``to``.
    status_from: str | None = None
    status_to: str | None = None


def _chunks(ids: Sequence[int], size: int = CHUNK) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def _raw_time(conn: Connection, value: datetime) -> Any:
    """A moment as the database stores it (what ``fetch_all`` returns for a time column)."""
    return to_epoch_us(value) if conn.dialect.name == "sqlite" else value


def detect_changes(conn: Connection, customer_ids: Iterable[int], *, now: datetime | None = None) -> int:
    """Find and enqueue the change occurrences of these customers; return how many were found (matched
    with a rule; found before, they insert nothing).

    Call it after the customers' projection is up to date, inside the transaction that changed them.
    """
    rules = list_rules(conn, CHANGE_TRIGGERS)
    if not rules:
        return 0
    ids = sorted(set(customer_ids))
    if not ids:
        return 0
    now = now or datetime.now(UTC)
    enqueued = 0
    # Only the occurrences some rule wants are built: most of the cost of a large batch is per object.
    triggers = frozenset(rule.trigger for rule in rules)
    for chunk in _chunks(ids):
        found = _changes_of(conn, chunk, now, triggers)
        enqueued += enqueue(conn, rules, found, now=now, count_new=False)
    return enqueued


_CHANGES_SQL = (
    "SELECT c.id, c.uuid, c.created_at, c.status, c.lead_created_at, c.free_trial_started_at, c.subscriber_since, "
    "m.customer_id, m.status, m.status_seq, m.lead_created_at, m.free_trial_started_at, m.subscriber_since "
    "FROM customers AS c LEFT OUTER JOIN automation_marks AS m ON m.customer_id = c.id WHERE c.id {ids}"
)
# The marks move on inside the database: a date once seen is kept, the status is the current one and
# every change of it counts.
_MARKS_SQL = (
    "INSERT INTO automation_marks (customer_id, lead_created_at, free_trial_started_at, subscriber_since, "
    "status, status_seq) SELECT id, lead_created_at, free_trial_started_at, subscriber_since, status, 0 "
    "FROM customers WHERE id {ids} ON CONFLICT (customer_id) DO UPDATE SET "
    "lead_created_at = coalesce(automation_marks.lead_created_at, excluded.lead_created_at), "
    "free_trial_started_at = coalesce(automation_marks.free_trial_started_at, excluded.free_trial_started_at), "
    "subscriber_since = coalesce(automation_marks.subscriber_since, excluded.subscriber_since), "
    "status_seq = automation_marks.status_seq + CASE WHEN automation_marks.status IS NOT NULL "
    "AND automation_marks.status <> excluded.status THEN 1 ELSE 0 END, status = excluded.status"
)


def _ids_clause(conn: Connection, ids: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
    if conn.dialect.name == "sqlite":
        return "IN (" + ", ".join("?" * len(ids)) + ")", tuple(ids)
    return "= ANY(%s)", (list(ids),)


def _changes_of(conn: Connection, chunk: Sequence[int], now: datetime,
                triggers: frozenset[str] = frozenset(CHANGE_TRIGGERS)) -> list[Occurrence]:
    """The occurrences of ``triggers`` of a chunk of customers (in customer order); moves their marks on.

    The marks move on for every change, whichever triggers are asked for: a trigger no rule has now must
    not fire for the past when a rule of it is applied later.
    """
    sqlite_db = conn.dialect.name == "sqlite"
    clause, params = _ids_clause(conn, chunk)
    rows = fetch_all(conn, _CHANGES_SQL.format(ids=clause), params)
    now_raw = _raw_time(conn, now)
    on_created, on_lead, on_trial, on_paid, on_status = (
        t in triggers for t in ("customer_created", "lead_created", "trial_started", "trial_converted",
                                "status_changed"))
    found: list[Occurrence] = []
    to_mark: list[int] = []
    add = found.append
    for (cid, uuid, created, status, lead, trial, paid, marked, m_status, m_seq, m_lead, m_trial,
         m_paid) in rows:
        unseen = marked is None
        new_lead = lead is not None and m_lead is None
        new_trial = trial is not None and m_trial is None
        new_paid = paid is not None and m_paid is None
        moved = not unseen and m_status is not None and m_status != status
        if not (unseen or new_lead or new_trial or new_paid or moved):
            continue
        to_mark.append(cid)
        if unseen and on_created:
            add(Occurrence(cid, uuid, "customer_created", _disc(created, sqlite_db), created, created, True))
        if new_lead and on_lead:
            add(Occurrence(cid, uuid, "lead_created", _disc(lead, sqlite_db), lead, created, unseen))
        if new_trial and on_trial:
            add(Occurrence(cid, uuid, "trial_started", _disc(trial, sqlite_db), trial, created, unseen))
        # Paid without a trial, or before it, is no trial converted.
        if new_paid and on_paid and trial is not None and paid >= trial:
            add(Occurrence(cid, uuid, "trial_converted", _disc(paid, sqlite_db), paid, created, unseen))
        if moved and on_status:
            add(Occurrence(cid, uuid, "status_changed", f"{m_status}>{status}#{(m_seq or 0) + 1}", now_raw, created,
                           False, m_status, status))
    if to_mark:
        clause, params = _ids_clause(conn, to_mark)
        conn.exec_driver_sql(_MARKS_SQL.format(ids=clause), params)
    return found


def _disc(raw: Any, sqlite_db: bool) -> str:
    return str(raw) if sqlite_db else str(to_epoch_us(raw))


def _matching(conn: Connection, rule: StoredRule, ids: list[int]) -> set[int]:
    """The ids among ``ids`` the rule's ``where`` keeps, evaluated now."""
    if not rule.where:
        return set(ids)
    try:
        clause = build_filter(conn, rule.where)
    except FilterError as exc:
        # Valid when applied, broken since (a data source it names was removed): the change that is
        # being written must not fail for it; the rule fires for nobody until it is fixed.
        log.warning("automation %s: its condition no longer applies (%s); it fires for nobody", rule.name, exc)
        return set()
    kept: set[int] = set()
    for chunk in _chunks(sorted(set(ids))):
        kept.update(conn.execute(select_customer_ids(clause, chunk)).scalars())
    return kept


def _rule_wants(rule: StoredRule, occurrence: Occurrence) -> bool:
    if rule.trigger != occurrence.trigger:
        return False
    if occurrence.trigger == "status_changed":
        params = rule.params
        if params.get("from") and params["from"] != occurrence.status_from:
            return False
        if params.get("to") and params["to"] != occurrence.status_to:
            return False
    return True


def enqueue(
    conn: Connection, rules: Sequence[StoredRule], found: Sequence[Occurrence], *, now: datetime,
    ignore_applied_at: bool = False, count_new: bool = True,
) -> int:
    """Match occurrences with rules (trigger, parameters, ``where``) and insert them and their deliveries
    where not there yet; return how many were new (with ``count_new``; else how many matched).

    A customer detection had never seen before that was created before a rule was applied (one that came
    back by an unmerge) is not news to that rule, unless ``ignore_applied_at`` (a backfill).
    """
    sqlite_db = conn.dialect.name == "sqlite"
    now_raw = _raw_time(conn, now)
    occurrence_rows: list[tuple[Any, ...]] = []
    kinds_of: dict[str, list[str]] = {}
    for rule in rules:
        applied_raw = _raw_time(conn, rule.applied_at)
        wanted = [
            occ for occ in found
            if _rule_wants(rule, occ) and (ignore_applied_at or not occ.unseen or _raw(occ.created_at, sqlite_db)
                                           >= applied_raw)
        ]
        if not wanted:
            continue
        keep = _matching(conn, rule, [occ.customer_id for occ in wanted])
        kinds_of[rule.name] = [action["kind"] for action in rule.actions]
        for occ in wanted:
            if occ.customer_id not in keep:
                continue
            oid = occurrence_id(rule.name, occ.customer_uuid, occ.trigger, occ.discriminator)
            occurrence_rows.append((oid, rule.name, occ.trigger, occ.customer_uuid, occ.discriminator,
                                    _raw(occ.occurred_at, sqlite_db), now_raw))
    if not occurrence_rows:
        return 0
    new = _insert_occurrences(conn, occurrence_rows, kinds_of, now_raw)
    return new if count_new else len({row[0] for row in occurrence_rows})


# PostgreSQL: the new occurrences and their deliveries in one statement from the staged rows. The
# deliveries come from what the occurrence insert returns (only occurrences not there yet), one per
# action of the occurrence's rule: no second staging, no conflict check, and an occurrence found
# again adds nothing.
_PG_ENQUEUE_SQL = (
    "WITH new AS (INSERT INTO automation_occurrences ({columns}) SELECT {columns} FROM {stage} "
    "ON CONFLICT (id) DO NOTHING RETURNING id, rule_name), "
    "actions AS (SELECT * FROM unnest(%s::text[], %s::int[], %s::text[]) AS a(rule_name, action_index, kind)), "
    "delivered AS (INSERT INTO automation_deliveries (occurrence_id, action_index, kind, status, attempts, "
    "next_attempt_at, updated_at) SELECT new.id, actions.action_index, actions.kind, 'pending', 0, %s, %s "
    "FROM new JOIN actions ON actions.rule_name = new.rule_name) "
    "SELECT count(*) FROM new"
)


def _insert_occurrences(conn: Connection, rows: list[tuple[Any, ...]], kinds_of: dict[str, list[str]],
                        now_raw: Any) -> int:
    """Insert the occurrences not there yet and a pending delivery per action of each; return how many
    occurrences were new.

    Deliveries are only ever written here, with their occurrence: occurrences are never deleted, so
    no foreign key checks each delivery (on a large import that check was most of the outbox's cost).
    """
    w = DialectWriter(conn)
    if conn.dialect.name == "postgresql":
        stage = w.stage("automation_occurrences", OCCURRENCE_COLUMNS, rows)
        names = [name for name, kinds in kinds_of.items() for _ in kinds]
        indexes = [i for kinds in kinds_of.values() for i in range(len(kinds))]
        kinds = [kind for kinds in kinds_of.values() for kind in kinds]
        sql = _PG_ENQUEUE_SQL.format(columns=", ".join(OCCURRENCE_COLUMNS), stage=stage)
        return int(conn.exec_driver_sql(sql, (names, indexes, kinds, now_raw, now_raw)).scalar_one())
    inserted = w.insert_new_returning("automation_occurrences", OCCURRENCE_COLUMNS, rows, ("id",),
                                      "id, rule_name")
    deliveries = [(oid, index, kind, "pending", 0, now_raw, now_raw)
                  for oid, rule in inserted for index, kind in enumerate(kinds_of[rule])]
    w.insert("automation_deliveries", DELIVERY_COLUMNS, deliveries)
    return len(inserted)


def _raw(value: Any, sqlite_db: bool) -> Any:
    """A time as this database stores it, from a datetime or from what it stored."""
    if sqlite_db and isinstance(value, datetime):
        return to_epoch_us(value)
    return value


def seed_marks(conn: Connection, *, refresh: bool) -> None:
    """Take the marks from the customers as they are: nothing that is already true fires later.

    ``refresh`` (no change rule was stored until now, so the marks may be stale) overwrites every mark;
    otherwise only customers without one get one (customers back from an unmerge).
    """
    m = automation_marks
    # The WHERE is needed: SQLite would read "INSERT … SELECT … ON CONFLICT" as a join's ON without one.
    source = select(
        customers.c.id, customers.c.lead_created_at, customers.c.free_trial_started_at,
        customers.c.subscriber_since, customers.c.status, literal(0),
    ).where(customers.c.id.isnot(None))
    columns = ["customer_id", *MARK_COLUMNS, "status", "status_seq"]
    stmt = dialect_insert(conn, m).from_select(columns, source)
    if refresh:
        stmt = stmt.on_conflict_do_update(
            index_elements=[m.c.customer_id], set_={c: stmt.excluded[c] for c in (*MARK_COLUMNS, "status")}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=[m.c.customer_id])
    conn.execute(stmt)


def backfill(conn: Connection, rule: StoredRule, *, now: datetime | None = None) -> int:
    """Fire a rule once for every customer already in its state (``backfill: true``); return how many.

    The occurrences are the ones a change would have made (same ids), so a customer that reached the
    state through a change is not fired for twice.
    """
    now = now or datetime.now(UTC)
    trigger = rule.trigger
    c = customers.c
    query = select(c.id, c.uuid, c.created_at, c.status, c.lead_created_at, c.free_trial_started_at,
                   c.subscriber_since).order_by(c.id)
    if trigger == "lead_created":
        query = query.where(c.lead_created_at.isnot(None))
    elif trigger == "trial_started":
        query = query.where(c.free_trial_started_at.isnot(None))
    elif trigger == "trial_converted":
        query = query.where(c.subscriber_since.isnot(None), c.free_trial_started_at.isnot(None),
                            c.subscriber_since >= c.free_trial_started_at)
    elif trigger == "status_changed":
        if rule.params.get("to"):
            query = query.where(c.status == rule.params["to"])
    elif trigger != "customer_created":
        return 0  # the time-based triggers backfill by themselves (their run looks at every customer)
    enqueued = 0
    batch: list[Occurrence] = []
    for row in conn.execute(query):
        if trigger == "customer_created":
            occ = Occurrence(row.id, row.uuid, trigger, moment(row.created_at), row.created_at)
        elif trigger == "status_changed":
            occ = Occurrence(row.id, row.uuid, trigger, f"backfill>{row.status}", now, status_to=row.status)
        else:
            column = dict(DATE_TRIGGERS)[trigger]
            value = getattr(row, column)
            occ = Occurrence(row.id, row.uuid, trigger, moment(value), value)
        batch.append(occ)
        if len(batch) >= CHUNK:
            enqueued += enqueue(conn, [rule], batch, now=now, ignore_applied_at=True)
            batch = []
    if batch:
        enqueued += enqueue(conn, [rule], batch, now=now, ignore_applied_at=True)
    return enqueued


# ------------------------------------------------------------------------------------------ the outbox


@dataclass(frozen=True, slots=True)
class Delivery:
    """One action of one occurrence, as the outbox holds it."""

    occurrence_id: str
    action_index: int
    kind: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    delivered_at: datetime | None
    rule_name: str
    trigger: str
    customer_uuid: str
    discriminator: str
    occurred_at: datetime
    detected_at: datetime

    @property
    def id(self) -> str:
        return f"{self.occurrence_id}:{self.action_index}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "occurrence_id": self.occurrence_id, "action_index": self.action_index,
            "kind": self.kind, "status": self.status, "attempts": self.attempts,
            "next_attempt_at": _iso(self.next_attempt_at), "last_error": self.last_error,
            "delivered_at": _iso(self.delivered_at) if self.delivered_at else None,
            "automation": self.rule_name, "trigger": self.trigger, "customer": self.customer_uuid,
            "discriminator": self.discriminator, "occurred_at": _iso(self.occurred_at),
            "detected_at": _iso(self.detected_at),
        }


_D = automation_deliveries
_O = automation_occurrences


def _delivery_query() -> Any:
    return select(
        _D.c.occurrence_id, _D.c.action_index, _D.c.kind, _D.c.status, _D.c.attempts, _D.c.next_attempt_at,
        _D.c.last_error, _D.c.delivered_at, _O.c.rule_name, _O.c.trigger, _O.c.customer_uuid,
        _O.c.discriminator, _O.c.occurred_at, _O.c.detected_at,
    ).select_from(_D.join(_O, _O.c.id == _D.c.occurrence_id))


def list_deliveries(
    conn: Connection, *, status: str | None = None, rule: str | None = None, limit: int | None = None,
    since: datetime | None = None,
) -> list[Delivery]:
    """Deliveries, newest first."""
    query = _delivery_query().order_by(_O.c.detected_at.desc(), _D.c.occurrence_id, _D.c.action_index)
    if status is not None:
        query = query.where(_D.c.status == status)
    if rule is not None:
        query = query.where(_O.c.rule_name == rule)
    if since is not None:
        query = query.where(_O.c.detected_at >= since)
    if limit is not None:
        query = query.limit(limit)
    return [Delivery(*row) for row in conn.execute(query)]


def due_deliveries(conn: Connection, now: datetime, limit: int) -> list[Delivery]:
    """Pending deliveries whose time has come, oldest first."""
    query = (
        _delivery_query()
        .where(_D.c.status == "pending", _D.c.next_attempt_at <= now)
        .order_by(_D.c.next_attempt_at, _D.c.occurrence_id, _D.c.action_index)
        .limit(limit)
    )
    return [Delivery(*row) for row in conn.execute(query)]


def count_due(conn: Connection, now: datetime) -> int:
    """How many pending deliveries are due by ``now``."""
    query = select(func.count()).select_from(_D).where(_D.c.status == "pending", _D.c.next_attempt_at <= now)
    return int(conn.execute(query).scalar_one())


def find_deliveries(conn: Connection, ref: str) -> list[Delivery]:
    """The deliveries ``ref`` names: ``occ_…:N`` one action, ``occ_…`` every action of the occurrence."""
    occurrence, _, index = ref.partition(":")
    query = _delivery_query().where(_D.c.occurrence_id == occurrence).order_by(_D.c.action_index)
    if index:
        if not index.isdigit():
            return []
        query = query.where(_D.c.action_index == int(index))
    return [Delivery(*row) for row in conn.execute(query)]


def record_attempts(conn: Connection, outcomes: Sequence[tuple[Delivery, str, int, str | None, datetime]],
                    now: datetime) -> None:
    """Store what delivering did: (delivery, new status, attempts, last error, next attempt at)."""
    if not outcomes:
        return
    # One executemany for the batch.
    conn.execute(
        update(_D)
        .where(_D.c.occurrence_id == bindparam("b_occ"), _D.c.action_index == bindparam("b_index"))
        .values(status=bindparam("b_status"), attempts=bindparam("b_attempts"), last_error=bindparam("b_error"),
                next_attempt_at=bindparam("b_next"), delivered_at=bindparam("b_delivered"), updated_at=now),
        [{"b_occ": d.occurrence_id, "b_index": d.action_index, "b_status": status, "b_attempts": attempts,
          "b_error": error, "b_next": next_at, "b_delivered": now if status == "delivered" else None}
         for d, status, attempts, error, next_at in outcomes],
    )


def reset_for_replay(conn: Connection, deliveries: Sequence[Delivery], due_at: datetime) -> None:
    """Make deliveries pending again, with a fresh count of attempts, due for the runs at ``due_at``."""
    now = datetime.now(UTC)
    for delivery in deliveries:
        conn.execute(
            update(_D)
            .where(_D.c.occurrence_id == delivery.occurrence_id, _D.c.action_index == delivery.action_index)
            .values(status="pending", attempts=0, next_attempt_at=due_at, updated_at=now)
        )


def delivery_counts(conn: Connection, since: datetime | None = None) -> dict[str, dict[str, int]]:
    """Per rule: how many deliveries are pending, delivered and failed (detected since ``since``)."""
    query = (
        select(_O.c.rule_name, _D.c.status, func.count())
        .select_from(_D.join(_O, _O.c.id == _D.c.occurrence_id))
        .group_by(_O.c.rule_name, _D.c.status)
    )
    if since is not None:
        query = query.where(or_(_O.c.detected_at >= since, and_(_D.c.updated_at >= since)))
    out: dict[str, dict[str, int]] = {}
    for name, status, count in conn.execute(query):
        out.setdefault(name, {"pending": 0, "delivered": 0, "failed": 0})[status] = count
    return out


def activity_by_rule(conn: Connection, since: datetime) -> dict[str, dict[str, int]]:
    """Per rule, what happened since ``since``: occurrences ``detected``, deliveries ``delivered`` and
    ``failed``; and how many deliveries are ``pending`` now (whenever detected)."""
    out: dict[str, dict[str, int]] = {}

    def add(what: str, query: Any) -> None:
        for name, count in conn.execute(query):
            out.setdefault(name, {"detected": 0, "delivered": 0, "failed": 0, "pending": 0})[what] = count

    # An occurrence without deliveries was passed on by a merge (``pass_occurrences_on``): it fired once,
    # for the customer it was detected for.
    delivered_any = select(_D.c.occurrence_id).where(_D.c.occurrence_id == _O.c.id).exists()
    add("detected", select(_O.c.rule_name, func.count()).where(_O.c.detected_at >= since, delivered_any)
        .group_by(_O.c.rule_name))
    joined = _D.join(_O, _O.c.id == _D.c.occurrence_id)
    per_rule = select(_O.c.rule_name, func.count()).select_from(joined).group_by(_O.c.rule_name)
    add("delivered", per_rule.where(_D.c.status == "delivered", _D.c.delivered_at >= since))
    add("failed", per_rule.where(_D.c.status == "failed", _D.c.updated_at >= since))
    add("pending", per_rule.where(_D.c.status == "pending"))
    return out


def retry_delay(attempts: int) -> timedelta:
    """How long a delivery that failed ``attempts`` times waits for its next run: doubling, at most an hour."""
    return timedelta(seconds=min(3600, 60 * 2 ** max(0, attempts - 1)))


# ---------------------------------------------------------------------------------- the time triggers


def detect_time_triggers(conn: Connection, rules: Sequence[StoredRule], now: datetime) -> dict[str, int]:
    """Enqueue the occurrences of ``trial_ending`` and ``trial_expired`` reached by ``now``; return how
    many were new, by rule.

    A moment reached before the rule was applied is not news to it (but with ``backfill``). Nothing is
    written but new occurrences, so running it twice, or from two workers, fires once.
    """
    enqueued: dict[str, int] = {}
    for rule in rules:
        if rule.trigger == "trial_ending":
            found = _trials_ending(conn, rule, now)
        elif rule.trigger == "trial_expired":
            found = _trials_expired(conn, rule, now)
        else:
            continue
        enqueued[rule.name] = sum(enqueue(conn, [rule], found[start : start + CHUNK], now=now, ignore_applied_at=True)
                                  for start in range(0, len(found), CHUNK))
    return enqueued


def _since(rule: StoredRule) -> datetime | None:
    return None if rule.definition.get("backfill") else rule.applied_at


def _trials_ending(conn: Connection, rule: StoredRule, now: datetime) -> list[Occurrence]:
    """Customers with a subscription still trialing whose trial ends within ``days_before`` days."""
    from storage.schema import source_customers, subscriptions

    ahead = timedelta(days=int(rule.params["days_before"]))
    query = (
        select(customers.c.id, customers.c.uuid, customers.c.created_at, subscriptions.c.trial_ended_at)
        .select_from(subscriptions.join(source_customers, source_customers.c.id == subscriptions.c.source_customer_id)
                     .join(customers, customers.c.id == source_customers.c.customer_id))
        .where(subscriptions.c.state == "trialing", subscriptions.c.trial_ended_at.isnot(None),
               subscriptions.c.trial_ended_at > now, subscriptions.c.trial_ended_at <= now + ahead)
        .order_by(customers.c.id, subscriptions.c.trial_ended_at)
    )
    since = _since(rule)
    if since is not None:
        # The moment reached (the end less the days before) came after the rule.
        query = query.where(subscriptions.c.trial_ended_at >= since + ahead)
    seen: set[tuple[int, str]] = set()
    found = []
    for row in conn.execute(query):
        key = (row.id, moment(row.trial_ended_at))
        if key in seen:
            continue
        seen.add(key)
        found.append(Occurrence(row.id, row.uuid, "trial_ending", key[1], row.trial_ended_at - ahead))
    return found


def _trials_expired(conn: Connection, rule: StoredRule, now: datetime) -> list[Occurrence]:
    """Customers whose trial started ``days_after`` days ago or more and who had not paid by then."""
    after = timedelta(days=int(rule.params["days_after"]))
    c = customers.c
    query = (
        select(c.id, c.uuid, c.created_at, c.free_trial_started_at, c.subscriber_since)
        .where(c.free_trial_started_at.isnot(None), c.free_trial_started_at <= now - after)
        .order_by(c.id)
    )
    since = _since(rule)
    if since is not None:
        query = query.where(c.free_trial_started_at >= since - after)
    # A customer's trial expires once, as its trial starts once: a merge that brings an earlier start, or
    # an unmerge that gives a customer its later one back, is no second expiry (what fired for either
    # side of a merge is passed on by ``pass_occurrences_on``).
    o = automation_occurrences
    query = query.where(~select(o.c.id).where(o.c.rule_name == rule.name, o.c.trigger == "trial_expired",
                                              o.c.customer_uuid == c.uuid).exists())
    found = []
    for row in conn.execute(query):
        deadline = row.free_trial_started_at + after
        if row.subscriber_since is not None and row.subscriber_since <= deadline:
            continue  # converted in time
        found.append(Occurrence(row.id, row.uuid, "trial_expired", moment(row.free_trial_started_at), deadline))
    return found


def customer_ids_by_uuid(conn: Connection, uuids: Sequence[str]) -> dict[str, int]:
    """Internal ids of live customers by uuid."""
    out: dict[str, int] = {}
    unique = sorted(set(uuids))
    for start in range(0, len(unique), CHUNK):
        rows = conn.execute(select(customers.c.uuid, customers.c.id)
                            .where(customers.c.uuid.in_(unique[start : start + CHUNK])))
        out.update({uuid: cid for uuid, cid in rows})
    return out


def manual_edits_by_customer(conn: Connection, customer_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The stored manual edits of several customers, by customer id and field (one query per chunk)."""
    from storage.schema import manual_edits

    out: dict[int, dict[str, Any]] = {cid: {} for cid in customer_ids}
    for chunk in _chunks(sorted(set(customer_ids))):
        for cid, name, value in conn.execute(
            select(manual_edits.c.customer_id, manual_edits.c.field, manual_edits.c.value)
            .where(ids_in(conn, manual_edits.c.customer_id, list(chunk)))
        ):
            out[cid][name] = value
    return out


def pass_marks_on(conn: Connection, pairs: Sequence[tuple[int, int]]) -> None:
    """Before customers are merged away (``(from_id, into_id)`` pairs): their survivor takes their marks,
    so what already fired for either of them does not fire again for the merged customer.

    A date seen on either is seen on the survivor (the earlier one); the survivor's status stays its
    own. Call it before the merged-away customers are deleted (their marks go with them).
    """
    if not pairs:
        return
    m = automation_marks
    ids = sorted({i for pair in pairs for i in pair})
    marks: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(ids):
        for row in conn.execute(select(m).where(ids_in(conn, m.c.customer_id, list(chunk)))).mappings():
            marks[row["customer_id"]] = dict(row)
    changed: dict[int, dict[str, Any]] = {}
    for from_id, into_id in pairs:
        gone = marks.get(from_id)
        if gone is None:
            continue
        kept = changed.get(into_id) or marks.get(into_id)
        if kept is None:
            # No status of its own seen: the survivor's current one becomes it without a "change".
            changed[into_id] = {**gone, "customer_id": into_id, "status": None}
            continue
        merged = dict(kept)
        for column in MARK_COLUMNS:
            values = [v for v in (kept[column], gone[column]) if v is not None]
            merged[column] = min(values) if values else None
        changed[into_id] = merged
    if changed:
        stmt = dialect_insert(conn, m)
        stmt = stmt.on_conflict_do_update(index_elements=[m.c.customer_id],
                                          set_={c: stmt.excluded[c] for c in MARK_COLUMNS})
        conn.execute(stmt, list(changed.values()))


def pass_occurrences_on(conn: Connection, pairs: Sequence[tuple[str, str]]) -> None:
    """What fired for one customer counts as fired for another: ``(from_uuid, to_uuid)`` pairs, at a merge
    (to the survivor, which now holds the merged-away one's trial and subscriptions) and at an unmerge (to
    the customer that comes back, for what fired while they were one).

    The marks do this for the change triggers; the time-based ones are found by the runs, which know a
    moment reached only by its occurrence, whose id names the customer. Each occurrence is copied under
    the other customer's uuid with no delivery: nothing is sent for it, and a run finding it inserts
    nothing. Call it in the transaction of the merge or unmerge.
    """
    if not pairs:
        return
    targets: dict[str, list[str]] = {}
    for from_uuid, to_uuid in pairs:
        targets.setdefault(from_uuid, []).append(to_uuid)
    o = automation_occurrences
    # Most databases merging in bulk have no occurrence at all (no automation ever fired): one probe
    # instead of a look-up of every merged-away uuid.
    if conn.execute(select(o.c.id).limit(1)).first() is None:
        return
    rows: list[dict[str, Any]] = []
    froms = sorted(targets)
    for start in range(0, len(froms), CHUNK):
        part = froms[start : start + CHUNK]
        if conn.dialect.name == "postgresql":
            # One array literal instead of thousands of bound parameters for the server to parse.
            held = o.c.customer_uuid == any_(cast(bindparam(None, text_array(part), type_=Text(), unique=True),
                                                  ARRAY(String())))
        else:
            held = o.c.customer_uuid.in_(part)
        query = select(o.c.rule_name, o.c.trigger, o.c.customer_uuid, o.c.discriminator, o.c.occurred_at,
                       o.c.detected_at).where(held)
        for row in conn.execute(query):
            for to_uuid in targets[row.customer_uuid]:
                rows.append({"id": occurrence_id(row.rule_name, to_uuid, row.trigger, row.discriminator),
                             "rule_name": row.rule_name, "trigger": row.trigger, "customer_uuid": to_uuid,
                             "discriminator": row.discriminator, "occurred_at": row.occurred_at,
                             "detected_at": row.detected_at})
    stmt = dialect_insert(conn, o).on_conflict_do_nothing(index_elements=[o.c.id])
    for start in range(0, len(rows), CHUNK):
        conn.execute(stmt, rows[start : start + CHUNK])


def mark_seen(conn: Connection, customer_ids: Sequence[int]) -> None:
    """Take these customers as seen as they are now, firing nothing (a customer back from an unmerge)."""
    if not list_rules(conn, CHANGE_TRIGGERS):
        return
    for chunk in _chunks(sorted(set(customer_ids))):
        clause, params = _ids_clause(conn, chunk)
        conn.exec_driver_sql(_MARKS_SQL.format(ids=clause), params)


def detect_duplicates(conn: Connection, groups: Sequence[Any], *, now: datetime | None = None) -> dict[str, list[Any]]:
    """Enqueue a ``duplicate_found`` occurrence per group found (about its survivor), for the rules of
    that trigger; return, per rule with a ``merge`` action, the groups newly found for it (to merge now).

    A group's discriminator is a digest of its members' uuids: the same group found by every later
    search is the same occurrence; a group that gained a member is a new one.
    """
    rules = list_rules(conn, ("duplicate_found",))
    if not rules or not groups:
        return {}
    now = now or datetime.now(UTC)
    found: list[Occurrence] = []
    by_key: dict[str, Any] = {}
    for group in groups:
        members = sorted(m.uuid for m in group.members)
        key = "group:" + hashlib.sha256("\x1f".join(members).encode()).hexdigest()[:32]
        by_key[key] = group
        survivor = group.survivor
        found.append(Occurrence(survivor.id, survivor.uuid, "duplicate_found", key, now))
    to_merge: dict[str, list[Any]] = {}
    for rule in rules:
        before = {occurrence_id(rule.name, o.customer_uuid, o.trigger, o.discriminator) for o in found}
        existing = _existing_ids(conn, sorted(before))
        enqueue(conn, [rule], found, now=now, ignore_applied_at=True, count_new=False)
        if any(action["kind"] == "merge" for action in rule.actions):
            kept = _matching(conn, rule, [o.customer_id for o in found])
            to_merge[rule.name] = [
                by_key[o.discriminator] for o in found
                if o.customer_id in kept
                and occurrence_id(rule.name, o.customer_uuid, o.trigger, o.discriminator) not in existing
            ]
    return to_merge


def _existing_ids(conn: Connection, ids: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for start in range(0, len(ids), CHUNK):
        out.update(conn.execute(select(automation_occurrences.c.id)
                                .where(automation_occurrences.c.id.in_(list(ids[start : start + CHUNK])))).scalars())
    return out


def mark_merge_actions_done(conn: Connection, rule: str, groups: Sequence[Any], now: datetime) -> None:
    """The ``merge`` deliveries of these groups' occurrences: done by the merge just made."""
    stored = {r.name: r for r in list_rules(conn, ("duplicate_found",))}.get(rule)
    if stored is None:
        return
    indexes = [i for i, action in enumerate(stored.actions) if action["kind"] == "merge"]
    for group in groups:
        members = sorted(m.uuid for m in group.members)
        key = "group:" + hashlib.sha256("\x1f".join(members).encode()).hexdigest()[:32]
        oid = occurrence_id(rule, group.survivor.uuid, "duplicate_found", key)
        conn.execute(update(_D).where(_D.c.occurrence_id == oid, _D.c.action_index.in_(indexes))
                     .values(status="delivered", attempts=1, delivered_at=now, updated_at=now))
