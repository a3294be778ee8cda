"""Finding a batch's existing records by key: one query per few thousand keys, through the DB-API.

SQLAlchemy's expanding IN costs more than the query itself at 5,000 ids; PostgreSQL takes the whole
list as one array parameter, probed per key.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, select

from storage.schema import source_customers
from storage.sql import chunks, fetch_all, ids_in


# PostgreSQL lookups of a batch's keys: one index probe per key, forced. A LATERAL subquery with LIMIT
# cannot be flattened into a join, so the planner cannot trade the probes for a hash join over the whole
# table. With a plain join on unnest() it did exactly that once the source grew (it sees the array's
# 5,000 keys), many times slower per batch in a large source. "external_id = ANY(%s)" scanned too.
@lru_cache(maxsize=8)
def _by_external_id_sql(columns: tuple[str, ...], sqlite: bool, keys: int = 0) -> str:
    """SELECT external_id and ``columns`` (our own constants) of one source's records among ``keys`` ids
    (SQLite: one marker each; PostgreSQL: one array parameter)."""
    if sqlite:
        marks = ",".join("?" * keys)  # only placeholders are joined in; values stay bound
        return (f"SELECT external_id, {', '.join(columns)} FROM source_customers "  # noqa: S608  # nosec B608 # our column names
                f"WHERE data_source_id = ? AND external_id IN ({marks})")
    return (f"SELECT k.external_id, {', '.join('sc.' + c for c in columns)} "  # noqa: S608  # nosec B608 # our column names
            "FROM unnest(%s::varchar[]) AS k(external_id) CROSS JOIN LATERAL ("
            f"SELECT {', '.join('s.' + c for c in columns)} FROM source_customers s "
            "WHERE s.data_source_id = %s AND s.external_id = k.external_id LIMIT 1) AS sc")


EXISTING_COLUMNS = ("id", "customer_id", "fingerprint")


PG_EXISTING_SQL = _by_external_id_sql(EXISTING_COLUMNS, False)


# Per normalised email, its oldest customer. Ordered by ``x.id + 0``, not ``x.id``: the primary key then
# cannot deliver the order, so the planner cannot walk it from the lowest id, filtering each row by email
# until one matches. Statistics taken while the table held few distinct emails (its first rows, a demo)
# make that walk look cheap; on a table filled since, a key with no customer reads every row.
PG_BY_EMAIL_SQL = (
    "SELECT k.email_norm, c.id FROM unnest(%s::varchar[]) AS k(email_norm) CROSS JOIN LATERAL ("
    "SELECT x.id FROM customers x WHERE x.email_norm = k.email_norm ORDER BY x.id + 0 LIMIT 1) AS c"
)


def unchanged_file_rows(conn: Connection, data_source_id: int, digests: Mapping[str, str]) -> set[str]:
    """The external ids among ``digests`` whose source customer was last written from a row with that digest.

    Such a row would read into the record as it is stored (``connectors.files.rows.RowDigest``).
    """
    rows = rows_by_external_id(conn, data_source_id, list(digests), ("row_fingerprint",))
    return {ext for ext, stored in rows if stored is not None and stored == digests[ext]}


def rows_by_external_id(conn: Connection, data_source_id: int, ext_ids: list[str],
                         columns: tuple[str, ...]) -> list[Any]:
    """(external id, *columns) of this source's records among ``ext_ids``, LOOKUP_CHUNK ids a query.

    Written against the DB-API: SQLAlchemy's expanding IN costs more than the query itself at 5,000
    ids, and PostgreSQL takes the whole list as one array parameter (probed per key, see
    ``_by_external_id_sql``).
    """
    sqlite = conn.dialect.name == "sqlite"
    rows: list[Any] = []
    for start in range(0, len(ext_ids), LOOKUP_CHUNK):
        part = ext_ids[start : start + LOOKUP_CHUNK]
        sql = _by_external_id_sql(columns, sqlite, len(part) if sqlite else 0)
        params: tuple[Any, ...] = (data_source_id, *part) if sqlite else (part, data_source_id)
        rows += fetch_all(conn, sql, params)
    return rows


def customers_by_email(conn: Connection, emails: list[str]) -> dict[str, int]:
    """The oldest customer of each normalised email that has one (DB-API, like the id lookup)."""
    found: dict[str, int] = {}
    sqlite = conn.dialect.name == "sqlite"
    for start in range(0, len(emails), LOOKUP_CHUNK):
        part = emails[start : start + LOOKUP_CHUNK]
        if sqlite:
            marks = ",".join("?" * len(part))
            sql = f"SELECT email_norm, id FROM customers WHERE email_norm IN ({marks})"  # noqa: S608  # nosec B608 # only markers
            params: tuple[Any, ...] = tuple(part)
        else:
            sql = PG_BY_EMAIL_SQL
            params = (part,)
        for email_norm, customer_id in fetch_all(conn, sql, params):
            if email_norm not in found or customer_id < found[email_norm]:
                found[email_norm] = customer_id
    return found


def customers_with_other_sources(conn: Connection, customer_ids: list[int], data_source_id: int) -> set[int]:
    """The customers among ``customer_ids`` that hold a record of a data source other than this one."""
    sc = source_customers
    found: set[int] = set()
    for part in chunks(customer_ids, LOOKUP_CHUNK):
        found.update(conn.execute(
            select(sc.c.customer_id).distinct()
            .where(ids_in(conn, sc.c.customer_id, part), sc.c.data_source_id != data_source_id)
        ).scalars())
    return found


LOOKUP_CHUNK = 5000
