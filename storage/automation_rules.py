"""The stored automation rules: what ``automations apply`` and the API write, what detection reads.

A rule is kept as its validated definition (a JSON object: name, trigger, params, where, backfill,
actions), secrets only as references. ``automations/rules.py`` validates; this module only stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from storage.schema import automation_rules

# Triggers detected in the transaction of the change that causes them (storage/outbox.py).
CHANGE_TRIGGERS = ("customer_created", "lead_created", "trial_started", "trial_converted", "status_changed")
# Triggers detected by ``automations run``: a moment is reached, nothing is written.
TIME_TRIGGERS = ("trial_ending", "trial_expired")
# Detected by the duplicate search.
DUPLICATE_TRIGGERS = ("duplicate_found",)
TRIGGERS = CHANGE_TRIGGERS + TIME_TRIGGERS + DUPLICATE_TRIGGERS


@dataclass(frozen=True, slots=True)
class StoredRule:
    """A rule as stored: its definition and since when it fires."""

    name: str
    trigger: str
    definition: dict[str, Any]
    applied_at: datetime
    updated_at: datetime

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.definition.get("params") or {})

    @property
    def where(self) -> str | None:
        return self.definition.get("where")

    @property
    def actions(self) -> list[dict[str, Any]]:
        return list(self.definition.get("actions") or [])


def _rule(row: Any) -> StoredRule:
    return StoredRule(row.name, row.trigger, dict(row.definition), row.applied_at, row.updated_at)


def list_rules(conn: Connection, triggers: Iterable[str] | None = None) -> list[StoredRule]:
    """The stored rules by name, optionally only those of some triggers."""
    query = select(automation_rules).order_by(automation_rules.c.name)
    if triggers is not None:
        query = query.where(automation_rules.c.trigger.in_(list(triggers)))
    return [_rule(row) for row in conn.execute(query)]


def get_rule(conn: Connection, name: str) -> StoredRule | None:
    row = conn.execute(select(automation_rules).where(automation_rules.c.name == name)).first()
    return None if row is None else _rule(row)


def has_rules(conn: Connection, triggers: Iterable[str]) -> bool:
    """Whether any rule of these triggers is stored (one indexed probe: the cost of a batch without rules)."""
    query = select(automation_rules.c.id).where(automation_rules.c.trigger.in_(list(triggers))).limit(1)
    return conn.execute(query).first() is not None


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What storing a set of rules did, by rule name."""

    created: list[str]
    updated: list[str]
    unchanged: list[str]
    removed: list[str]


def store_rules(
    conn: Connection, definitions: Iterable[Mapping[str, Any]], *, prune: bool = False,
    now: datetime | None = None,
) -> StoreOutcome:
    """Create or update rules by name (and with ``prune`` remove the others), in the caller's transaction.

    An unchanged definition keeps its ``applied_at``: re-applying a file makes nothing fire again, and
    a rule that changes keeps firing only for what happens from now on.
    """
    now = now or datetime.now(UTC)
    existing = {rule.name: rule for rule in list_rules(conn)}
    created: list[str] = []
    updated: list[str] = []
    unchanged: list[str] = []
    seen: set[str] = set()
    for definition in definitions:
        name = str(definition["name"])
        seen.add(name)
        old = existing.get(name)
        values = {"trigger": definition["trigger"], "definition": dict(definition), "updated_at": now}
        if old is None:
            conn.execute(automation_rules.insert().values(name=name, applied_at=now, **values))
            created.append(name)
        elif old.definition != dict(definition):
            conn.execute(update(automation_rules).where(automation_rules.c.name == name).values(**values))
            updated.append(name)
        else:
            unchanged.append(name)
    removed = sorted(set(existing) - seen) if prune else []
    if removed:
        conn.execute(delete(automation_rules).where(automation_rules.c.name.in_(removed)))
    return StoreOutcome(created, updated, unchanged, removed)


def delete_rule(conn: Connection, name: str) -> bool:
    """Remove one rule; False when there was none of that name."""
    return conn.execute(delete(automation_rules).where(automation_rules.c.name == name)).rowcount > 0
