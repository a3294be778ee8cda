"""Finding duplicate customers (docs/merging.md): one GROUP BY per rule on a stored, indexed key.

Keys are ``customers.email_norm``, ``source_customers.external_id`` across data sources and
``customers.website_domain`` — never a comparison of pairs — and the rules' findings are united with
union-find (``storage.merge_plan``) so no customer lands in two groups. Customers a user separated with
an unmerge stay apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import Connection, exists, func, literal, select, text

from funnelsync.normalize import FREE_MAIL_DOMAINS
from funnelsync.process_settings import paused_gc
from storage.merge_plan import DEFAULT_RULES, RULES, CandidateSet, Group, Member, group_candidates
from storage.schema import customers, data_sources, merge_events, source_customers
from storage.sql import chunks, fetch_all, pg_visible_fraction
from storage.types import from_epoch_us

# Keys per IN (...) list: well under SQLite's 32,766 bound parameters and PostgreSQL's 65,535.
CHUNK = 2000


def check_rules(rules: Iterable[str]) -> tuple[str, ...]:
    """Validate rule names; return them de-duplicated in ``RULES`` order.

    Raises:
        ValueError: for an unknown rule or an empty list.
    """
    wanted = list(dict.fromkeys(rules))
    unknown = [r for r in wanted if r not in RULES]
    if unknown:
        raise ValueError(f"unknown merge rule {unknown[0]!r}: expected one of {', '.join(RULES)}")
    if not wanted:
        raise ValueError(f"no merge rule given: expected one or more of {', '.join(RULES)}")
    return tuple(r for r in RULES if r in wanted)


def _customer_key_candidates(conn: Connection, rule: str, key_column: str, exclude: Sequence[str] = ()) -> tuple[
    list[CandidateSet], dict[int, Member]
]:
    """Customers sharing a stored key column: one GROUP BY on the indexed key, then the members."""
    sqlite = conn.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    not_excluded = f" AND {key_column} NOT IN ({', '.join([mark] * len(exclude))})" if exclude else ""
    # Read through the DB-API: a million rows' SQLAlchemy rows and type processing were most of detection.
    rows = fetch_all(
        conn,
        f"SELECT id, uuid, created_at, has_subscriptions, {key_column} FROM customers "  # noqa: S608  # nosec B608 # constant names
        f"WHERE {key_column} IN (SELECT {key_column} FROM customers WHERE {key_column} IS NOT NULL{not_excluded} "
        f"GROUP BY {key_column} HAVING count(*) > 1) ORDER BY {key_column}, id",
        tuple(exclude),
    )
    found: list[CandidateSet] = []
    members: dict[int, Member] = {}
    key: str | None = None
    ids: list[int] = []
    for customer_id, uuid, created_at, has_subscriptions, row_key in rows:
        members[customer_id] = Member(
            customer_id, uuid, from_epoch_us(created_at) if sqlite else created_at, bool(has_subscriptions)
        )
        if row_key != key:
            if len(ids) > 1:
                found.append(CandidateSet(rule, key or "", tuple(ids)))
            key, ids = row_key, []
        ids.append(customer_id)
    if len(ids) > 1:
        found.append(CandidateSet(rule, key or "", tuple(ids)))
    return found, members


def _external_id_candidates(conn: Connection) -> tuple[list[CandidateSet], dict[int, Member]]:
    """Customers whose source customers share an external id across data sources."""
    sc, c = source_customers, customers
    # (data source, external id) is unique, so an external id held twice is held by two data sources, and
    # at most one of them is the largest: looking up, in the external_id index, the ids of every source
    # but the largest finds every shared id without grouping the whole table.
    sources = _sources_largest_first(conn)
    if len(sources) < 2:
        return [], {}
    other = sc.alias("other")
    # OFFSET 0 keeps the EXISTS a probe of the external_id index per row (PostgreSQL would otherwise hash
    # the whole table to join it); SQLite probes the index either way.
    held_elsewhere = (
        select(literal(1))
        .select_from(other)
        .where(other.c.external_id == sc.c.external_id, other.c.data_source_id != sc.c.data_source_id)
        .offset(0)
    )
    shared = sorted({
        row.external_id
        for row in conn.execute(
            select(sc.c.external_id).where(
                sc.c.data_source_id.in_(sources[1:]), exists(held_elsewhere)
            )
        )
    })
    rows = [
        row
        for part in chunks(shared, CHUNK)
        for row in conn.execute(
            select(sc.c.external_id, c.c.id, c.c.uuid, c.c.created_at, c.c.has_subscriptions)
            .join(c, c.c.id == sc.c.customer_id)
            .where(sc.c.external_id.in_(part))
            .order_by(sc.c.external_id, c.c.id)
        ).tuples()
    ]
    found: list[CandidateSet] = []
    members: dict[int, Member] = {}
    key: str | None = None
    ids: list[int] = []
    for external_id, customer_id, uuid, created_at, has_subscriptions in rows:
        members[customer_id] = Member(customer_id, uuid, created_at, bool(has_subscriptions))
        if external_id != key:
            # Ids already merged into one customer are no duplicate of it.
            if len(set(ids)) > 1:
                found.append(CandidateSet("external_id", key or "", tuple(dict.fromkeys(ids))))
            key, ids = external_id, []
        ids.append(customer_id)
    if len(set(ids)) > 1:
        found.append(CandidateSet("external_id", key or "", tuple(dict.fromkeys(ids))))
    return found, members


def _sources_largest_first(conn: Connection) -> list[int]:
    """Every data source, the one holding the most source customers first.

    Which source is left out of the lookups only decides how many lookups the rule makes, never what it
    finds (every other source is looked up), so on PostgreSQL the planner's statistics rank them: counting
    a million rows took a tenth of detection. Sources the statistics do not list follow in id order.
    """
    sc = source_customers
    if conn.dialect.name == "postgresql":
        stats = conn.exec_driver_sql(
            "SELECT most_common_vals::text::bigint[], most_common_freqs FROM pg_stats "
            "WHERE schemaname = current_schema() AND tablename = %s AND attname = %s",
            (sc.name, sc.c.data_source_id.name),
        ).first()
        if stats is not None and stats[0]:
            share = dict(zip(stats[0], stats[1], strict=True))
            ids = [row.id for row in conn.execute(select(data_sources.c.id).order_by(data_sources.c.id))]
            return sorted(ids, key=lambda ds: -share.get(ds, 0.0))
    sizes = conn.execute(
        select(sc.c.data_source_id, func.count().label("n")).group_by(sc.c.data_source_id).order_by(
            func.count().desc(), sc.c.data_source_id
        )
    ).all()
    return [row.data_source_id for row in sizes]


def find_duplicate_groups(conn: Connection, rules: Iterable[str] = DEFAULT_RULES) -> list[Group]:
    """Find groups of customers that are the same customer, with each group's survivor.

    Args:
        conn: a connection (read only).
        rules: any of ``email`` (normalised email, on by default), ``external_id`` (the same external id
            in different data sources, on by default) and ``domain`` (the same website domain, free-mail
            domains ignored; off by default).

    Returns:
        Disjoint groups of two or more customers (customers linked through different rules are one
        group), each with its survivor: the customer with subscription facts, else the oldest.

    Raises:
        ValueError: for an unknown rule.
    """
    wanted = check_rules(rules)
    with paused_gc():
        return _find_groups(conn, wanted)


def _find_groups(conn: Connection, wanted: Sequence[str]) -> list[Group]:
    restore = _tune_postgres_for_grouping(conn)
    try:
        candidates, members = _find_candidates(conn, wanted)
    finally:
        if restore:
            for name, value in restore.items():
                conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})
    # Customers a user separated with an unmerge stay apart: auto-merge must not undo the user's decision
    # on the next sync (unmerges are rare, so reading them all is cheap).
    separated = {
        frozenset((row.from_customer_uuid, row.into_customer_uuid))
        for row in conn.execute(
            select(merge_events.c.from_customer_uuid, merge_events.c.into_customer_uuid).where(
                merge_events.c.kind == "unmerge"
            )
        )
    }
    return group_candidates(candidates, members, separated)


# PostgreSQL's defaults hurt the one big GROUP BY per rule: 4 MB of work_mem spills the hash aggregate of
# a million keys to disk, and a parallel plan re-runs the (non-parallel) aggregate in every worker.
_GROUPING_SETTINGS = {"work_mem": "256MB", "max_parallel_workers_per_gather": "0"}
# Once VACUUM has marked the table's pages all-visible, counting each key in the order of its index (an
# index-only scan into a GroupAggregate) reads a tenth of the bytes of a sequential scan and hashes
# nothing: about half the server time of the hash aggregate over a million customers (bench/merge.py).
# Before that, every index entry would visit the heap, and the hash aggregate wins.
_INDEX_ORDER_SETTINGS = {"enable_hashagg": "off"}
INDEX_ORDER_VISIBLE = 0.9


def _tune_postgres_for_grouping(conn: Connection) -> dict[str, str]:
    """Set transaction-local planner settings for detection; return the previous values to restore."""
    if conn.dialect.name != "postgresql":
        return {}
    settings = dict(_GROUPING_SETTINGS)
    if pg_visible_fraction(conn, customers.name) >= INDEX_ORDER_VISIBLE:
        settings.update(_INDEX_ORDER_SETTINGS)
    previous = {}
    for name, value in settings.items():
        previous[name] = conn.execute(text("SELECT current_setting(:name)"), {"name": name}).scalar_one()
        conn.execute(text("SELECT set_config(:name, :value, true)"), {"name": name, "value": value})
    return previous


def _find_candidates(conn: Connection, wanted: Sequence[str]) -> tuple[list[CandidateSet], dict[int, Member]]:
    candidates: list[CandidateSet] = []
    members: dict[int, Member] = {}
    for rule in wanted:
        if rule == "email":
            found, seen = _customer_key_candidates(conn, "email", "email_norm")
        elif rule == "domain":
            # website_domain is stored without free-mail hosts; excluding them here too keeps rows written
            # by an older normaliser from merging every gmail.com customer.
            found, seen = _customer_key_candidates(
                conn, "domain", "website_domain", exclude=sorted(FREE_MAIL_DOMAINS)
            )
        else:
            found, seen = _external_id_candidates(conn)
        candidates.extend(found)
        members.update(seen)
    return candidates, members
