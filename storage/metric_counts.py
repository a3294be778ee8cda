"""Funnel counts per UTC day and country, kept exact by triggers on ``customers``.

The funnel series sums these counts instead of scanning every customer (storage/metrics.py): 36 months
are 1,096 rows a family and country, whatever the number of customers.

Why triggers, and this shape:
- Every write to ``customers`` goes through them: the upsert, the projection, merges (the merged-away
  customer is deleted), unmerges (it comes back), edits, removals, bulk loads, ``COPY`` and direct SQL.
  No write path can forget to keep the counts, so they are exact by construction.
- A customer contributes to one row per date it has: leads by ``lead_created_at`` (``k``: it has a trial
  date), free trials by ``free_trial_started_at`` (``k``: converted, subscriber since not earlier) and
  new subscribers by ``subscriber_since`` (``k``: a lead date not later, with the cycle length summed as
  whole seconds and microsecond remainders: integer sums cannot drift nor overflow). An update takes the
  old contribution away and adds the new one; only a change of a date or the country costs anything.
- Writers only append to ``metric_count_deltas`` (no index, no row another writer waits for: upserts into
  shared day rows would serialise concurrent PostgreSQL syncs and could deadlock them, and cost SQLite
  a B-tree search a date). SQLite appends from a row trigger, PostgreSQL from a statement trigger
  (transition tables, one grouped insert a statement). Readers add the pending deltas to
  ``metric_counts``; ``fold_deltas`` moves them in (after a bulk load, or when a reader finds many).
- A large load (storage/bulk_load.py) suspends the triggers, so its rows cost nothing extra, and
  recounts everything in one grouped pass when it ends; meanwhile readers scan (see ``KEPT``).
- UTC days: a series whose period bounds are all UTC midnights (the account zone UTC, the default) is
  answered from the counts; any other falls back to the scan.

A migration that rebuilds ``customers`` (SQLite batch mode copies the table) drops its triggers: it
must call ``install`` and ``rebuild`` again (tests/test_metric_counts.py checks that head has them).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, select, text
from sqlalchemy.exc import OperationalError

from storage.db import is_database_locked, sqlite_busy_timeout
from storage.schema import metric_count_deltas, metric_counts

LEADS, TRIALS, SUBSCRIBERS = 1, 2, 3
# A row of family 0 says "the counts are kept": readers that do not see it (in the same statement as the
# counts) scan customers instead. ``suspend`` removes it with the triggers, ``rebuild`` puts it back.
KEPT = 0
DAY_US = 86_400_000_000
# Readers fold the deltas into metric_counts once this many rows have piled up (PostgreSQL).
FOLD_AT_ROWS = 20_000
# pg_try_advisory_xact_lock key: one folder at a time (a second one skips, the first does the work).
FOLD_LOCK_KEY = 0x6D65_7472  # "metr"

_TRIGGERS = ("metric_counts_insert", "metric_counts_delete", "metric_counts_update", "metric_counts_truncate")
PG_FUNCTIONS = (
    "metric_counts_after_insert",
    "metric_counts_after_delete",
    "metric_counts_after_update",
    "metric_counts_after_truncate",
)
_COLUMNS = "family, at, country, n, k, cycle_s, cycle_us"
_SQLITE_ADD = (
    " ON CONFLICT (family, at, country) DO UPDATE SET n = n + excluded.n, k = k + excluded.k, "
    "cycle_s = cycle_s + excluded.cycle_s, cycle_us = cycle_us + excluded.cycle_us"
)
_PG_ADD = (
    " ON CONFLICT (family, at, country) DO UPDATE SET n = metric_counts.n + excluded.n, "
    "k = metric_counts.k + excluded.k, cycle_s = metric_counts.cycle_s + excluded.cycle_s, "
    "cycle_us = metric_counts.cycle_us + excluded.cycle_us"
)


def _contributions(sqlite: bool, cols: dict[str, str], sign: int, source: str = "") -> str:
    """``UNION ALL`` of one row per family a customer (or each row of ``source``) contributes.

    ``cols`` maps lead/trial/sub/country to the SQL that reads them (``NEW.lead_created_at``, …).
    """
    lead, trial, sub, country = cols["lead"], cols["trial"], cols["sub"], cols["country"]

    def day(column: str) -> str:
        if sqlite:  # integer epoch microseconds; % truncates towards zero, so floor it by hand
            return f"({column} - (({column} % {DAY_US}) + {DAY_US}) % {DAY_US})"
        return f"date_bin('1 day', {column}, TIMESTAMPTZ '1970-01-01 00:00:00+00')"

    if sqlite:
        diff = f"({sub} - {lead})"
        cycle_s, cycle_us = f"{diff} / 1000000", f"{diff} % 1000000"
    else:
        epoch = f"extract(epoch FROM {sub} - {lead})"  # numeric: exact to the microsecond
        cycle_s = f"floor({epoch})::bigint"
        cycle_us = f"(({epoch} - floor({epoch})) * 1000000)::bigint"
    in_cycle = f"{lead} IS NOT NULL AND {lead} <= {sub}"
    families = (
        (LEADS, lead, f"{trial} IS NOT NULL", "0", "0"),
        (TRIALS, trial, f"{sub} IS NOT NULL AND {sub} >= {trial}", "0", "0"),
        (
            SUBSCRIBERS,
            sub,
            in_cycle,
            f"CASE WHEN {in_cycle} THEN {cycle_s} ELSE 0 END",
            f"CASE WHEN {in_cycle} THEN {cycle_us} ELSE 0 END",
        ),
    )
    return "\nUNION ALL\n".join(
        f"SELECT {family} AS family, {day(at)} AS at, coalesce({country}, '') AS country, "
        f"{sign} AS n, CASE WHEN {k} THEN {sign} ELSE 0 END AS k, "
        f"{sign} * ({seconds}) AS cycle_s, {sign} * ({micros}) AS cycle_us "
        f"{source} WHERE {at} IS NOT NULL"
        for family, at, k, seconds, micros in families
    )


def _row_cols(alias: str) -> dict[str, str]:
    return {
        "lead": f"{alias}.lead_created_at",
        "trial": f"{alias}.free_trial_started_at",
        "sub": f"{alias}.subscriber_since",
        "country": f"{alias}.country",
    }


def _sqlite_append(alias: str, sign: int) -> str:
    return f"INSERT INTO metric_count_deltas ({_COLUMNS}) {_contributions(True, _row_cols(alias), sign)};\n"


def _sqlite_ddl() -> list[str]:
    watched = ("lead_created_at", "free_trial_started_at", "subscriber_since", "country")
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in watched)
    return [
        f"CREATE TRIGGER metric_counts_insert AFTER INSERT ON customers BEGIN\n{_sqlite_append('NEW', 1)}END",
        f"CREATE TRIGGER metric_counts_delete AFTER DELETE ON customers BEGIN\n{_sqlite_append('OLD', -1)}END",
        f"CREATE TRIGGER metric_counts_update AFTER UPDATE OF {', '.join(watched)} ON customers "
        f"WHEN {changed} BEGIN\n{_sqlite_append('OLD', -1)}{_sqlite_append('NEW', 1)}END",
    ]


def _pg_grouped(body: str, having: bool = False) -> str:
    condition = (
        " HAVING sum(n) <> 0 OR sum(k) <> 0 OR sum(cycle_s) <> 0 OR sum(cycle_us) <> 0" if having else ""
    )
    return (
        f"INSERT INTO metric_count_deltas ({_COLUMNS}) SELECT family, at, country, sum(n), sum(k), "  # noqa: S608  # nosec B608 # constant SQL
        f"sum(cycle_s), sum(cycle_us) FROM ({body}) AS contributions GROUP BY family, at, country{condition}"
    )


# The trigger functions' statements read transition tables, which have no statistics: the planner guesses
# hundreds of thousands of rows for a statement of a few thousand, and past jit_above_cost compiles the
# query with full optimisation, about 1.7 s each time, against 0.1 s to run it (a re-projection of 10,000
# customers in one UPDATE). Nothing these statements do pays for JIT.
PG_FUNCTION_SETTINGS = "SET jit = off"


def _pg_function(name: str, body: str) -> str:
    return (
        f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql {PG_FUNCTION_SETTINGS} AS $fn$\n"
        f"BEGIN\n{body};\nRETURN NULL;\nEND\n$fn$"
    )


def _pg_ddl() -> list[str]:
    # Only rows whose dates or country changed count: most updates (the projection rewriting a name or
    # updated_at) join to nothing here and cost a hash join of the statement's rows.
    watched = "lead_created_at, free_trial_started_at, subscriber_since, country"
    old = {k: f"o_{k}" for k in ("lead", "trial", "sub", "country")}
    new = {k: f"n_{k}" for k in ("lead", "trial", "sub", "country")}
    changed = (
        "(SELECT o.lead_created_at AS o_lead, o.free_trial_started_at AS o_trial, "  # noqa: S608  # nosec B608 # constant SQL
        "o.subscriber_since AS o_sub, o.country AS o_country, n.lead_created_at AS n_lead, "
        "n.free_trial_started_at AS n_trial, n.subscriber_since AS n_sub, n.country AS n_country "
        "FROM old_rows o JOIN new_rows n ON n.id = o.id "
        f"WHERE (o.{watched.replace(', ', ', o.')}) IS DISTINCT FROM (n.{watched.replace(', ', ', n.')})) "
        "AS changed"
    )
    update_body = (
        f"{_contributions(False, old, -1, 'FROM ' + changed)}\nUNION ALL\n"
        f"{_contributions(False, new, 1, 'FROM ' + changed)}"
    )
    row = _row_cols("r")
    return [
        _pg_function(
            "metric_counts_after_insert", _pg_grouped(_contributions(False, row, 1, "FROM new_rows r"))
        ),
        _pg_function(
            "metric_counts_after_delete", _pg_grouped(_contributions(False, row, -1, "FROM old_rows r"))
        ),
        _pg_function("metric_counts_after_update", _pg_grouped(update_body, having=True)),
        _pg_function(
            "metric_counts_after_truncate", "DELETE FROM metric_counts;\nDELETE FROM metric_count_deltas"
        ),
        "CREATE TRIGGER metric_counts_insert AFTER INSERT ON customers REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION metric_counts_after_insert()",
        "CREATE TRIGGER metric_counts_delete AFTER DELETE ON customers REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION metric_counts_after_delete()",
        "CREATE TRIGGER metric_counts_update AFTER UPDATE ON customers "
        "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION metric_counts_after_update()",
        "CREATE TRIGGER metric_counts_truncate AFTER TRUNCATE ON customers "
        "FOR EACH STATEMENT EXECUTE FUNCTION metric_counts_after_truncate()",
    ]


def uninstall(conn: Connection) -> None:
    """Drop the triggers (the counts then go stale until ``install`` and ``rebuild``)."""
    sqlite = conn.dialect.name == "sqlite"
    for name in _TRIGGERS:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}" + ("" if sqlite else " ON customers"))
    if not sqlite:
        for function in PG_FUNCTIONS:
            conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {function}()")


def install(conn: Connection) -> None:
    """(Re)create the triggers that keep the counts; follow with ``rebuild`` if any write went unseen."""
    uninstall(conn)
    for statement in _sqlite_ddl() if conn.dialect.name == "sqlite" else _pg_ddl():
        conn.exec_driver_sql(statement)


def installed(conn: Connection) -> set[str]:
    """The names of the count triggers present on ``customers``."""
    if conn.dialect.name == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'customers'"
    else:
        sql = "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass('customers') AND NOT tgisinternal"
    return {name for (name,) in conn.exec_driver_sql(sql)} & set(_TRIGGERS)


def rebuild(conn: Connection) -> None:
    """Recount everything from ``customers`` (the backfill of an existing database; after a bulk load).

    On PostgreSQL, take ``customers`` in SHARE mode first when writers may be running: a write committed
    between the recount's snapshot and its commit would otherwise be counted twice or not at all.
    """
    sqlite = conn.dialect.name == "sqlite"
    if not sqlite:
        conn.exec_driver_sql("LOCK TABLE customers IN SHARE MODE")
    conn.execute(metric_count_deltas.delete())
    conn.execute(metric_counts.delete())
    body = _contributions(sqlite, _row_cols("customers"), 1, "FROM customers")
    conn.exec_driver_sql(
        f"INSERT INTO metric_counts ({_COLUMNS}) SELECT family, at, country, sum(n), sum(k), "  # noqa: S608  # nosec B608 # constant SQL
        f"sum(cycle_s), sum(cycle_us) FROM ({body}) AS contributions GROUP BY family, at, country"
    )
    conn.execute(
        metric_counts.insert().values(
            family=KEPT, at=datetime(1970, 1, 1, tzinfo=UTC), country="", n=1, k=0, cycle_s=0, cycle_us=0
        )
    )


def suspend(conn: Connection) -> None:
    """Stop keeping the counts (a large load is about to write): readers scan until ``resume``."""
    uninstall(conn)
    conn.execute(metric_counts.delete().where(metric_counts.c.family == KEPT))


def resume(conn: Connection) -> None:
    """Keep the counts again: the triggers back, and everything recounted."""
    install(conn)
    rebuild(conn)


def kept(conn: Connection) -> bool:
    """Whether the counts are kept (the triggers present and the counts marked so)."""
    marked = conn.execute(
        select(metric_counts.c.family).where(metric_counts.c.family == KEPT).limit(1)
    ).first()
    return marked is not None and installed(conn) == expected_triggers(conn)


def expected_triggers(conn: Connection) -> set[str]:
    """The count triggers ``install`` creates on this database (SQLite has no TRUNCATE)."""
    return set(_TRIGGERS) - ({"metric_counts_truncate"} if conn.dialect.name == "sqlite" else set())


def fold_deltas(conn: Connection) -> int:
    """Move the pending deltas into ``metric_counts``; returns how many delta rows were folded.

    Safe beside writers and readers: only committed deltas are seen and moved, and a reader's one
    statement sees each delta either pending or in ``metric_counts``, never both. Rows whose counts all
    come back to zero are dropped.
    """
    if conn.dialect.name == "sqlite":
        # One writer at a time: what is below the highest rowid now is exactly what gets deleted.
        last = conn.exec_driver_sql("SELECT max(rowid) FROM metric_count_deltas").scalar()
        if last is None:
            return 0
        folded = conn.exec_driver_sql(
            "SELECT count(*) FROM metric_count_deltas WHERE rowid <= ?", (last,)
        ).scalar_one()
        conn.exec_driver_sql(
            f"INSERT INTO metric_counts ({_COLUMNS}) SELECT family, at, country, sum(n), sum(k), "  # noqa: S608  # nosec B608 # constant SQL
            "sum(cycle_s), sum(cycle_us) FROM metric_count_deltas WHERE rowid <= ? "
            f"GROUP BY family, at, country{_SQLITE_ADD}",
            (last,),
        )
        conn.exec_driver_sql("DELETE FROM metric_count_deltas WHERE rowid <= ?", (last,))
    else:
        if not conn.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": FOLD_LOCK_KEY}).scalar():
            return 0  # another session is folding them
        folded = conn.exec_driver_sql(
            "WITH moved AS (DELETE FROM metric_count_deltas RETURNING *), "  # noqa: S608  # nosec B608 # constant SQL
            f"summed AS (INSERT INTO metric_counts ({_COLUMNS}) "
            "SELECT family, at, country, sum(n), sum(k), sum(cycle_s), sum(cycle_us) FROM moved "
            f"GROUP BY family, at, country ORDER BY family, at, country{_PG_ADD} RETURNING 1) "
            "SELECT count(*) FROM moved"
        ).scalar_one()
    conn.exec_driver_sql(
        "DELETE FROM metric_counts WHERE family <> 0 AND n = 0 AND k = 0 AND cycle_s = 0 AND cycle_us = 0"
    )
    return int(folded)


def fold_if_many(conn: Connection) -> None:
    """Fold the deltas in a transaction of its own once ``FOLD_AT_ROWS`` are pending.

    Its own transaction, so the fold persists even when the caller only reads and rolls back; it never
    waits: on SQLite a writer holding the database (the caller itself, maybe) means "next time".
    """
    many = conn.execute(
        text("SELECT count(*) FROM (SELECT 1 FROM metric_count_deltas LIMIT :n) AS d"), {"n": FOLD_AT_ROWS}
    ).scalar_one()
    if many < FOLD_AT_ROWS:
        return
    with conn.engine.connect() as own:
        sqlite = own.dialect.name == "sqlite"
        try:
            if sqlite:
                own.exec_driver_sql("PRAGMA busy_timeout = 0")
                own.exec_driver_sql("BEGIN IMMEDIATE")
            fold_deltas(own)
            own.commit()
        except OperationalError as exc:
            own.rollback()
            if not (sqlite and is_database_locked(exc)):
                raise
        finally:
            if sqlite:
                own.exec_driver_sql(f"PRAGMA busy_timeout = {int(sqlite_busy_timeout() * 1000)}")
