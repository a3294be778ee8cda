"""Pure decisions of merging, testable without a database (docs/merging.md).

- ``group_candidates``: unite the candidate groups every rule found (union-find over the group edges), so a
  customer that matches one customer by email and another by external id ends up in ONE group, never two.
- ``choose_survivor``: the customer with subscription facts, else the oldest (created_at, then id).
- ``plan_edit_moves``: what happens to the manual edits of the customer merged away.
- ``row_to_json`` / ``row_from_json``: the snapshot format that lets an unmerge restore a row exactly.

``storage.merge`` does the reads and writes around these.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from sqlalchemy import Boolean, Table

from storage.types import UTCDateTime

# Rules in the order they are reported; email and external id are on, domain is off by default.
RULES = ("email", "external_id", "domain")
DEFAULT_RULES = ("email", "external_id")
# The rule an import's join of a new record to another source's customer by email is logged with: the
# ``email`` rule applied as the record arrives instead of after it.
EMAIL_AT_IMPORT = "email-at-import"

# Manual-edit fields whose merged value is the EARLIEST of the two customers (docs/merging.md, "What survives a merge").
EARLIEST_DATE_FIELDS = ("lead_created_at", "free_trial_started_at")

SNAPSHOT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Member:
    """A customer as detection sees it: enough to pick the survivor."""

    id: int
    uuid: str
    created_at: datetime
    has_subscriptions: bool


@dataclass(slots=True)
class Group:
    """Customers that are one and the same, the one that survives, and the rules that matched them."""

    survivor: Member
    others: list[Member]
    rules: list[str]
    # The matching keys, per rule (e.g. {"email": ["jane@acme.io"]}), for the dry-run report.
    keys: dict[str, list[str]] = field(default_factory=dict)

    @property
    def members(self) -> list[Member]:
        """Survivor first, then the others in survivor order."""
        return [self.survivor, *self.others]

    @property
    def rule(self) -> str:
        """The rules that matched, joined by ``+`` (what the merge log records)."""
        return "+".join(self.rules)

    def as_json(self) -> dict[str, Any]:
        """A JSON-ready description (CLI ``--json`` and flow artifacts)."""
        return {
            "survivor": self.survivor.uuid,
            "merged": [m.uuid for m in self.others],
            "rule": self.rule,
            "keys": self.keys,
        }


def survivor_order_key(member: Member) -> tuple[int, datetime, int]:
    """Sort key: subscribers first, then the oldest, then the lowest id (a stable tie-break)."""
    return (0 if member.has_subscriptions else 1, member.created_at, member.id)


def choose_survivor(members: Sequence[Member]) -> Member:
    """The customer that survives a merge of ``members``.

    The record with subscription facts (from any source), else the oldest. Among several
    subscribers the oldest survives too; equal ages fall back to the lowest id so the choice is stable.

    Raises:
        ValueError: when ``members`` is empty.
    """
    if not members:
        raise ValueError("cannot choose a survivor among no customers")
    return min(members, key=survivor_order_key)


class UnionFind:
    """Disjoint sets of integer ids (path halving + union by size): near-linear in the number of edges."""

    def __init__(self) -> None:
        self._parent: dict[int, int] = {}
        self._size: dict[int, int] = {}

    def find(self, item: int) -> int:
        """The representative of ``item``'s set (``item`` joins as a singleton if new)."""
        parent = self._parent
        if item not in parent:
            parent[item] = item
            self._size[item] = 1
            return item
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: int, b: int) -> int:
        """Join the sets of ``a`` and ``b``; return the new representative."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]
        return ra

    def sets(self) -> dict[int, list[int]]:
        """Representative → members, for every item seen."""
        out: dict[int, list[int]] = {}
        for item in self._parent:
            out.setdefault(self.find(item), []).append(item)
        return out


@dataclass(frozen=True, slots=True)
class CandidateSet:
    """One rule's finding: customers sharing ``key`` under ``rule``."""

    rule: str
    key: str
    customer_ids: tuple[int, ...]


def group_candidates(
    candidates: Iterable[CandidateSet],
    members: Mapping[int, Member],
    separated: Collection[frozenset[str]] = frozenset(),
) -> list[Group]:
    """Unite overlapping candidate sets into disjoint groups and pick each group's survivor.

    Args:
        candidates: what the rules found; a set may overlap others (same customers by email and by
            external id, or a chain A~B by email, B~C by domain).
        members: the detection view of every customer id named in ``candidates``; ids missing here
            (deleted since detection) are left out.
        separated: uuid pairs a user split apart with an unmerge; such a member is not merged into
            that survivor again automatically (a manual merge still can).

    Returns:
        Groups of two or more customers, sorted by survivor id; rules in ``RULES`` order.
    """
    # Most candidate sets share no customer with any other set (one rule's sets never do: a customer has
    # one email and one domain): those are groups as they are. Only sets holding a customer that another
    # set holds too go through union-find, which costs several dict operations per customer. Counting in
    # C which customers appear more than once keeps the common case to one pass.
    valid: list[tuple[CandidateSet, list[int]]] = []
    for cand in candidates:
        ids = [i for i in dict.fromkeys(cand.customer_ids) if i in members]
        if len(ids) >= 2:
            valid.append((cand, ids))
    shared = {i for i, n in Counter(chain.from_iterable(ids for _, ids in valid)).items() if n > 1}
    overlapping: set[int] = set()
    groups: list[Group] = []
    uf = UnionFind()
    for number, (cand, ids) in enumerate(valid):
        if not shared or shared.isdisjoint(ids):
            # A set alone is a group of one rule and one key: built directly, as most groups are (and most
            # of those are pairs).
            if len(ids) == 2:
                a, b = members[ids[0]], members[ids[1]]
                ordered = [a, b] if survivor_order_key(a) <= survivor_order_key(b) else [b, a]
            else:
                ordered = sorted((members[i] for i in ids), key=survivor_order_key)
            if separated:
                ordered = _apart(ordered, separated)
                if len(ordered) < 2:
                    continue
            groups.append(Group(ordered[0], ordered[1:], [cand.rule], {cand.rule: [cand.key]}))
            continue
        overlapping.add(number)
        first = ids[0]
        uf.find(first)
        for other in ids[1:]:
            uf.union(first, other)
    rules: dict[int, set[str]] = {}
    keys: dict[int, dict[str, set[str]]] = {}
    for number in overlapping:
        cand, ids = valid[number]
        root = uf.find(ids[0])
        rules.setdefault(root, set()).add(cand.rule)
        keys.setdefault(root, {}).setdefault(cand.rule, set()).add(cand.key)
    for root, ids in uf.sets().items():
        group = _group_of(ids, members, rules[root], keys[root], separated)
        if group is not None:
            groups.append(group)
    groups.sort(key=lambda g: g.survivor.id)
    return groups


def _apart(ordered: list[Member], separated: Collection[frozenset[str]]) -> list[Member]:
    """The survivor and the members not separated from it by an unmerge."""
    return [ordered[0]] + [m for m in ordered[1:] if frozenset((ordered[0].uuid, m.uuid)) not in separated]


def _group_of(
    ids: Iterable[int],
    members: Mapping[int, Member],
    rules: Collection[str],
    keys: Mapping[str, Collection[str]],
    separated: Collection[frozenset[str]],
) -> Group | None:
    """The group of customers ``ids`` (two or more), or None when an unmerge separated all but one."""
    ordered = sorted((members[i] for i in ids), key=survivor_order_key)
    if separated:
        ordered = _apart(ordered, separated)
        if len(ordered) < 2:
            return None
    group_rules = [r for r in RULES if r in rules]
    group_rules += sorted(set(rules) - set(RULES))
    return Group(
        survivor=ordered[0],
        others=ordered[1:],
        rules=group_rules,
        keys={r: sorted(k) for r, k in sorted(keys.items())},
    )


# ---------------------------------------------------------------------------------------------------
# Manual edits


@dataclass(slots=True)
class EditPlan:
    """What a merge does to manual edits.

    Attributes:
        move: FROM's fields whose edit moves to INTO as it is.
        set_into: fields where INTO's edit is (re)written with a value the merge computed (earliest
            dates); INTO's previous edit, if any, is kept in the snapshot.
        drop: FROM's fields whose edit loses to INTO (kept only in the snapshot, back on unmerge).
    """

    move: list[str] = field(default_factory=list)
    set_into: dict[str, Any] = field(default_factory=dict)
    drop: list[str] = field(default_factory=list)


def _empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _as_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))  # Python 3.11 reads a trailing Z itself
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def effective_value(effective: Mapping[str, Any], field_name: str) -> Any:
    """The effective (projected) value of an edit field name on a customer view/row mapping.

    ``custom.<key>`` reads the custom attributes, ``tag.<name>`` answers whether the tag is present.
    """
    if field_name.startswith("custom."):
        return (effective.get("custom") or {}).get(field_name[len("custom."):])
    if field_name.startswith("tag."):
        return field_name[len("tag."):] in (effective.get("tags") or [])
    return effective.get(field_name)


def plan_edit_moves(
    into_effective: Mapping[str, Any],
    into_edits: Mapping[str, Any],
    from_effective: Mapping[str, Any],
    from_edits: Mapping[str, Any],
) -> EditPlan:
    """Decide the fate of each manual edit of FROM when FROM merges into INTO.

    The merged customer must show what survives (docs/merging.md), given that the projection puts a
    manual edit above every source value:

    - lead and trial dates: the earliest effective value of the two. When either side has an edit for
      the date, INTO's edit becomes that earliest value (without edits the projection already takes the
      earliest source value, so nothing is written).
    - ``tag.<name>``: INTO's edit wins a conflict; FROM's "added" edit moves (tags are united); FROM's
      "removed" edit moves only when INTO does not show the tag itself (a union must not remove the
      survivor's own tag).
    - every other field (profile fields, ``custom.<key>``): INTO's edit wins; FROM's edit moves only
      where INTO shows no value (the survivor's value wins, the other's fills the gap).

    Args:
        into_effective: INTO's effective fields before the merge (a ``customers`` row as a mapping).
        into_edits: INTO's manual edits, field → value.
        from_effective: FROM's effective fields before the merge.
        from_edits: FROM's manual edits, field → value.
    """
    plan = EditPlan()
    for date_field in EARLIEST_DATE_FIELDS:
        if date_field not in into_edits and date_field not in from_edits:
            continue
        values = [
            v for v in (_as_datetime(into_effective.get(date_field)), _as_datetime(from_effective.get(date_field)))
            if v is not None
        ]
        if not values:
            continue
        earliest = min(values)
        if date_field in into_edits and _as_datetime(into_edits[date_field]) == earliest:
            pass  # INTO's edit already holds the earliest value
        else:
            plan.set_into[date_field] = earliest
        if date_field in from_edits:
            plan.drop.append(date_field)  # its value lives on in INTO's edit when it was the earliest
    for field_name in sorted(from_edits):
        if field_name in EARLIEST_DATE_FIELDS:
            continue
        if field_name in into_edits:
            plan.drop.append(field_name)
            continue
        value = from_edits[field_name]
        if field_name.startswith("tag."):
            if value is False and effective_value(into_effective, field_name):
                plan.drop.append(field_name)
            else:
                plan.move.append(field_name)
            continue
        if _empty(effective_value(into_effective, field_name)):
            plan.move.append(field_name)
        else:
            plan.drop.append(field_name)
    return plan


# ---------------------------------------------------------------------------------------------------
# Snapshots: rows as JSON and back, exact for every column type we use.


def row_to_json(table: Table, row: Mapping[str, Any]) -> dict[str, Any]:
    """A table row as JSON-ready values (datetimes as ISO 8601 with offset, exact to the microsecond)."""
    out: dict[str, Any] = {}
    for column in table.columns:
        if column.name not in row:
            continue
        value = row[column.name]
        if isinstance(value, datetime):
            value = value.astimezone(UTC).isoformat()
        out[column.name] = value
    # Values come from the row's own columns (JSON-native once times are text); a snapshot that held
    # anything else fails where it is written as JSON, in the same transaction.
    return out


def row_from_json(table: Table, data: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of ``row_to_json``: values ready to insert into ``table``."""
    out: dict[str, Any] = {}
    for column in table.columns:
        if column.name not in data:
            continue
        value = data[column.name]
        if value is not None and isinstance(column.type, UTCDateTime):
            value = datetime.fromisoformat(value)
        elif value is not None and isinstance(column.type, Boolean):
            value = bool(value)
        out[column.name] = value
    return out
