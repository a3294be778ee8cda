"""Storing validated rules: the checks that need the database, secrets protected, backfills run.

Everything happens in one transaction: a set of rules with any error stores nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine

from automations.rules import RuleError, RuleValidationError
from jobs.secrets import SecretResolutionError, resolve_value, store_local_secret
from storage.automation_rules import (
    CHANGE_TRIGGERS,
    StoreOutcome,
    get_rule,
    has_rules,
    list_rules,
    store_rules,
)
from storage.filter_grammar import FilterError, parse_filters
from storage.filters import check_sources
from storage.outbox import backfill, seed_marks

# (action kind, setting) that hold a secret: a literal is kept in a local secret file, the rule holds
# only its reference. A Slack incoming-webhook URL is itself the credential.
SECRET_SETTINGS = (("webhook", "secret"), ("slack", "url"))
REFERENCE_PREFIXES = ("env:", "prefect-secret:", "local-secret:")


@dataclass
class ApplyResult:
    """What applying did: the rules by outcome and how many occurrences each backfill enqueued."""

    outcome: StoreOutcome
    backfilled: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.outcome.created, "updated": self.outcome.updated,
            "unchanged": self.outcome.unchanged, "removed": self.outcome.removed, "backfilled": self.backfilled,
        }


def check_with_database(conn: Connection, definitions: Sequence[Mapping[str, Any]],
                        base: Sequence[tuple[str | int, ...]] | None = None) -> list[RuleError]:
    """The errors only the database can tell: a condition naming a data source that does not exist."""
    errors: list[RuleError] = []
    for index, definition in enumerate(definitions):
        if not definition.get("where"):
            continue
        try:
            check_sources(conn, parse_filters(definition["where"]))
        except FilterError as exc:
            prefix = tuple(base[index]) if base is not None else ()
            errors.append(RuleError(prefix + ("where",), str(exc)))
    return errors


def _protect(conn: Connection, definition: dict[str, Any]) -> dict[str, Any]:
    """The definition with literal secrets replaced by references (the stored one's when it holds the same)."""
    stored = get_rule(conn, definition["name"])
    old_actions = stored.actions if stored is not None else []
    actions = []
    for index, action in enumerate(definition["actions"]):
        action = dict(action)
        for kind, setting in SECRET_SETTINGS:
            value = action.get(setting)
            if action["kind"] != kind or not isinstance(value, str) or value.startswith(REFERENCE_PREFIXES):
                continue
            old = old_actions[index] if index < len(old_actions) else {}
            old_ref = old.get(setting) if old.get("kind") == kind else None
            if isinstance(old_ref, str) and old_ref.startswith("local-secret:") and _resolves_to(old_ref, value):
                action[setting] = old_ref
            else:
                action[setting] = store_local_secret(f"automation-{definition['name']}", f"{kind}-{setting}", value)
        actions.append(action)
    return {**definition, "actions": actions}


def _resolves_to(ref: str, value: str) -> bool:
    try:
        return bool(resolve_value("secret", ref) == value)
    except SecretResolutionError:
        return False


def apply_definitions(
    conn: Connection, definitions: Sequence[Mapping[str, Any]], *, prune: bool = False,
    now: datetime | None = None,
) -> ApplyResult:
    """Store validated definitions in the caller's transaction; raise ``RuleValidationError`` first if
    the database finds one wrong."""
    errors = check_with_database(conn, definitions, [("automations", i) for i in range(len(definitions))])
    if errors:
        raise RuleValidationError(errors)
    now = now or datetime.now(UTC)
    had_change_rules = has_rules(conn, CHANGE_TRIGGERS)
    protected = [_protect(conn, dict(d)) for d in definitions]
    before = {rule.name: rule.definition for rule in list_rules(conn)}
    outcome = store_rules(conn, protected, prune=prune, now=now)
    if has_rules(conn, CHANGE_TRIGGERS):
        # While no change rule was stored nobody kept the marks: take them from the customers as they are,
        # so what is already true does not fire.
        seed_marks(conn, refresh=not had_change_rules)
    result = ApplyResult(outcome)
    by_name = {rule.name: rule for rule in list_rules(conn)}
    for name in outcome.created:
        rule = by_name[name]
        if rule.definition.get("backfill"):
            result.backfilled[name] = backfill(conn, rule, now=now)
    for name in outcome.updated:
        rule = by_name[name]
        if rule.definition.get("backfill") and _asks_anew(before[name], rule.definition):
            # Applied with backfill now (or for another state): who is already there fires, once; the
            # occurrence ids are the same as before, so nobody it fired for already fires again.
            result.backfilled[name] = backfill(conn, rule, now=now)
    return result


def _asks_anew(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether an updated rule's backfill covers customers its stored version had not backfilled."""
    if not old.get("backfill"):
        return True
    return any(old.get(key) != new.get(key) for key in ("trigger", "params", "where"))


def apply_rules(engine: Engine, definitions: Sequence[Mapping[str, Any]], *, prune: bool = False) -> ApplyResult:
    """``apply_definitions`` in a transaction of its own."""
    with engine.begin() as conn:
        return apply_definitions(conn, definitions, prune=prune)
