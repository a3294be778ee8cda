"""SQL helpers every storage module shares: id lists, upserts of small tables, DB-API reads, chunks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Connection, Table, Text, any_, bindparam, cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY

from storage.types import UTCDateTime, from_epoch_us, load_json


def dialect_insert(conn: Connection, table: Table) -> Any:
    """The dialect's own ``INSERT`` for ``table`` (it has ``on_conflict_do_nothing`` on both)."""
    return (sqlite if conn.dialect.name == "sqlite" else postgresql).insert(table)


def upsert_on_conflict(
    conn: Connection, table: Table, rows: list[dict[str, Any]], conflict: Sequence[str], update_cols: Sequence[str]
) -> None:
    """A Core ``INSERT … ON CONFLICT DO UPDATE`` for either dialect (small tables: state, settings)."""
    if not rows:
        return
    stmt = dialect_insert(conn, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(conflict), set_={c: stmt.excluded[c] for c in update_cols}
    )
    conn.execute(stmt, rows)


def fetch_all(conn: Connection, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """Rows of a DB-API query in one ``fetchall``, on the caller's connection and transaction.

    Iterating SQLAlchemy's result fetches one row per call, most of the time of an unchanged
    re-import's lookup.
    """
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()  # type: ignore[no-any-return]
    finally:
        cursor.close()


def ids_clause(conn: Connection, ids: Sequence[int]) -> tuple[str, tuple[Any, ...]]:
    """``IN (?, …)`` on SQLite, ``= ANY(%s)`` with one array on PostgreSQL, and its parameters: the tail of
    a DB-API ``WHERE column …`` (``fetch_all``, ``exec_driver_sql``)."""
    if conn.dialect.name == "sqlite":
        return "IN (" + ", ".join("?" * len(ids)) + ")", tuple(ids)
    return "= ANY(%s::bigint[])", (int_array(ids),)


def int_array(ids: Sequence[int]) -> str:
    """A PostgreSQL array literal of integers, bound as one text parameter and cast by the statement.

    psycopg adapts a Python list element by element in Python; joining the digits is done in C, and
    the merge of a batch sends tens of thousands of ids.
    """
    return "{" + ",".join(map(str, map(int, ids))) + "}"


def text_array(values: Sequence[str | None]) -> str:
    """A PostgreSQL array literal of strings (NULL for None), each quoted, for one text parameter.

    Inside double quotes a backslash escapes the next character, so escaping backslashes and quotes
    is all an element needs, whatever text it holds.
    """
    return "{" + ",".join(
        "NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values
    ) + "}"


def row_decoder(conn: Connection, table: Table, columns: Sequence[str]) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """A function making a DB-API row of ``table``'s ``columns`` into the dict SQLAlchemy would give.

    On SQLite times (epoch microseconds) become aware datetimes, JSON text is decoded and booleans are
    bools; psycopg does all of that itself (its datetimes are in the session's zone: compare them, or
    ``astimezone`` before formatting). Without the per-value machinery of the column types, a batch of
    thousands of rows reads several times faster.
    """
    names = tuple(columns)
    if conn.dialect.name != "sqlite":
        return lambda row: dict(zip(names, row, strict=True))
    converters: list[tuple[int, Callable[[Any], Any]]] = []
    for i, name in enumerate(names):
        kind = table.c[name].type
        if isinstance(kind, UTCDateTime):
            converters.append((i, from_epoch_us))
        elif isinstance(kind, JSON):
            converters.append((i, sqlite_json))
        elif isinstance(kind, Boolean):
            converters.append((i, bool))
    if not converters:
        return lambda row: dict(zip(names, row, strict=True))

    def decode(row: Sequence[Any]) -> dict[str, Any]:
        values = list(row)
        for i, convert in converters:
            if values[i] is not None:
                values[i] = convert(values[i])
        return dict(zip(names, values, strict=True))

    return decode


def sqlite_json(value: Any) -> Any:
    """A value of a SQLite JSON column, decoded: the column's numeric affinity stores a JSON number as a
    number, which comes back as it is (as SQLAlchemy's JSON type returns it)."""
    return load_json(value) if isinstance(value, str) else value


def ids_in(conn: Connection, column: Any, ids: Sequence[int]) -> Any:
    """``column IN (ids)``; on PostgreSQL ``column = ANY(:array)``: one parameter instead of thousands.

    A long IN list costs PostgreSQL far more to parse and plan than one array, which adds up when a
    merge batch re-projects thousands of customers.
    """
    if conn.dialect.name == "postgresql":
        literal = bindparam(None, int_array(ids), type_=Text(), unique=True)
        return column == any_(cast(literal, ARRAY(BigInteger())))
    return column.in_(ids)


def pg_visible_fraction(conn: Connection, table: str) -> float:
    """PostgreSQL: the fraction of ``table``'s pages VACUUM has marked all-visible (0 when unknown).

    Below most of them an index-only scan still reads the heap for every entry, so the plans that lean
    on one (metrics, duplicate detection) check this first.
    """
    visible = conn.exec_driver_sql(
        "SELECT relallvisible::float8 / greatest(relpages, 1) FROM pg_class WHERE oid = to_regclass(%s)", (table,)
    ).scalar()
    return float(visible or 0.0)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``size``: ids per ``IN`` list, merges per transaction."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
