"""Writing rows fast on either database: positional DB-API statements, multi-row VALUES on SQLite, COPY
on PostgreSQL.

The hot statements run through the DB-API (``exec_driver_sql``) with positional parameters, which is
much faster than SQLAlchemy Core executemany and keeps PostgreSQL on psycopg's pipelined executemany.
Values are still bound parameters, never formatted into SQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from itertools import chain
from sqlite3 import SQLITE_LIMIT_VARIABLE_NUMBER
from typing import Any

from sqlalchemy import JSON, Connection
from sqlalchemy.dialects import postgresql

from storage.schema import metadata
from storage.sql import text_array
from storage.types import EPOCH, ONE_MICROSECOND

# Rows per multi-row INSERT on SQLite: past a few hundred the gain is flat and statements get long.
SQLITE_ROWS_PER_STATEMENT = 500


_TIME_COLUMNS = frozenset(
    {"linked_at", "lead_created_at", "free_trial_started_at", "subscriber_since", "created_at", "updated_at",
     "trial_started_at", "trial_ended_at", "first_paid_at", "cancelled_at"}
)


_JSON_COLUMNS = frozenset({"tags", "custom", "raw"})


@lru_cache(maxsize=64)
def _row_builder(columns: tuple[str, ...], sqlite_times: bool) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A function turning a row dict into the DB-API tuple for ``columns``, conversions inlined.

    Generated once per column list (names are our own constants): a generic loop over columns and
    converters costs about twice as much, and this runs for every row of a million-row import.
    """
    parts = []
    for i, column in enumerate(columns):
        ref = f"d[{column!r}]"
        if column in _TIME_COLUMNS and sqlite_times:
            parts.append(f"(None if (v{i} := {ref}) is None else (v{i} - EPOCH) // ONE_MICROSECOND)")
        elif column in _JSON_COLUMNS:
            parts.append(f"(None if (v{i} := {ref}) is None else json_text(v{i}))")
        else:
            parts.append(ref)
    source = "lambda d: (" + ", ".join(parts) + ",)"
    return eval(source, {"EPOCH": EPOCH, "ONE_MICROSECOND": ONE_MICROSECOND, "json_text": json_text})  # noqa: S307  # nosec B307 # our constant column names


def json_text(value: Any) -> str:
    if not value:
        return "[]" if isinstance(value, list) else "{}"
    return json.dumps(value, default=str)


class DialectWriter:
    """Builds positional DB-API statements and converts values for the connection's dialect.

    Rows are built as dicts holding every column and turned into tuples by a generated function per
    column list (``_row_builder``): this runs once per row of a million-row import.
    On PostgreSQL, rows that cannot conflict are written with ``COPY`` and upserts go through a
    ``COPY`` into a staging table followed by one ``INSERT … SELECT … ON CONFLICT``, well ahead of
    executemany.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"
        self.mark = "?" if self.sqlite else "%s"

    def rows(self, columns: Sequence[str], dicts: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        build = _row_builder(tuple(columns), self.sqlite)
        return [build(d) for d in dicts]

    def insert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
               conflict: Sequence[str] | None = None, update_columns: Sequence[str] = ()) -> None:
        """Insert rows; with ``conflict``, an upsert (``DO UPDATE SET`` the update columns)."""
        if not rows:
            return
        if not self.sqlite and len(rows) >= 50:
            if conflict:
                self._copy_upsert(table, columns, rows, conflict, update_columns)
            else:
                self._copy(table, columns, rows)
            return
        marks = "(" + ", ".join([self.mark] * len(columns)) + ")"
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608  # nosec B608 # constant names
        tail = self._conflict_clause(conflict, update_columns)
        if not self.sqlite:
            self.conn.exec_driver_sql(head + marks + tail, rows)
            return
        self._sqlite_values(head + "{values}" + tail, len(columns), rows)

    def insert_select(self, template: str, width: int, rows: list[tuple[Any, ...]]) -> None:
        """Run ``template`` (SQLite) with ``{values}`` replaced by a VALUES list of ``width`` markers per row."""
        if rows:
            self._sqlite_values(template, width, rows)

    def _sqlite_values(self, template: str, width: int, rows: list[tuple[Any, ...]]) -> list[Any]:
        # SQLite: many rows per statement. executemany steps the statement once per row and re-takes
        # the GIL and re-binds between steps; a multi-row VALUES list does the same work in one step,
        # less time per row for our wide rows. Values stay bound parameters.
        # Returns what the statements return (a template with RETURNING), else nothing.
        marks = "(" + ", ".join("?" * width) + ")"
        per = max(1, min(SQLITE_ROWS_PER_STATEMENT, self._sqlite_variable_limit() // width))
        cursor = self.conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        returned: list[Any] = []
        try:
            for start in range(0, len(rows), per):
                part = rows[start : start + per]
                cursor.execute(template.format(values=", ".join([marks] * len(part))), list(chain.from_iterable(part)))
                if cursor.description is not None:
                    returned.extend(cursor.fetchall())
        finally:
            cursor.close()
        return returned

    def insert_new_returning(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
                             conflict: Sequence[str], returning: str) -> list[Any]:
        """SQLite: insert the rows whose ``conflict`` key is not there yet; return the ``returning``
        columns of those inserted (the others are left as they are)."""
        head = f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608  # nosec B608 # constant names
        tail = self._conflict_clause(conflict, ()) + f" RETURNING {returning}"
        return self._sqlite_values(head + "{values}" + tail, len(columns), rows)

    def stage(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> str:
        """PostgreSQL: ``COPY`` the rows into an emptied session staging table shaped like ``table``;
        return its name (for one ``INSERT … SELECT`` from it)."""
        stage = f"_stage_{table}"
        self.conn.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        self.conn.exec_driver_sql(f"TRUNCATE {stage}")
        self._copy(stage, columns, rows)
        return stage

    def insert_new(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
                   conflict: Sequence[str] | None, update_columns: Sequence[str]) -> None:
        """Insert rows the batch's lookup found absent.

        On PostgreSQL the rows go straight in with ``COPY``, skipping the staging table and the
        ``ON CONFLICT`` pass, which takes the server most of the staged upsert's time; a key another
        writer inserted since the lookup fails it, and ``upsert_records`` runs the batch again.
        """
        if self.sqlite or len(rows) < 50:
            self.insert(table, columns, rows, conflict, update_columns)
            return
        self._copy(table, columns, rows)

    def update(self, table: str, key: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        """Set ``columns`` on the rows of ``table`` whose ``key`` is each tuple's first value.

        ``rows`` are ``(key, *values)`` tuples converted by ``rows`` (with ``key`` first in its column list).
        On PostgreSQL a batch is one ``UPDATE … FROM unnest(arrays)``: planned once, and a statement-level
        trigger of the table (the metric counts') runs once for the batch instead of once a row, which is
        most of the cost of an executemany of thousands of single-row updates; each array goes as one
        text parameter (``_array_literal``). SQLite steps one statement per row in C (its triggers are per
        row anyway).
        """
        if not rows:
            return
        if self.sqlite or len(rows) < 50:
            sets = ", ".join(f"{c} = {self.mark}" for c in columns)
            sql = f"UPDATE {table} SET {sets} WHERE {key} = {self.mark}"  # noqa: S608  # nosec B608 # constant names
            self.conn.exec_driver_sql(sql, [(*row[1:], row[0]) for row in rows])
            return
        names = (key, *columns)
        types = _pg_array_types(table, tuple(names))
        sets = ", ".join(f'"{c}" = u."{c}"{cast}' for c, (_, cast) in zip(columns, types[1:], strict=True))
        arrays = ", ".join(f"%s::{element}[]" for element, _ in types)
        aliases = ", ".join(f'"{c}"' for c in names)
        sql = (
            f'UPDATE {table} AS t SET {sets} FROM unnest({arrays}) AS u({aliases}) '  # noqa: S608  # nosec B608 # constant names
            f'WHERE t."{key}" = u."{key}"'
        )
        by_column = zip(*rows, strict=True)
        self.conn.exec_driver_sql(
            sql, tuple(_array_literal(values, element) for values, (element, _) in zip(by_column, types, strict=True))
        )

    def _sqlite_variable_limit(self) -> int:
        raw = self.conn.connection.driver_connection
        return int(raw.getlimit(SQLITE_LIMIT_VARIABLE_NUMBER))  # type: ignore[union-attr]

    @staticmethod
    def _conflict_clause(conflict: Sequence[str] | None, update_columns: Sequence[str]) -> str:
        if not conflict:
            return ""
        if update_columns:
            sets = ", ".join(f"{c} = excluded.{c}" for c in update_columns)
            return f" ON CONFLICT ({', '.join(conflict)}) DO UPDATE SET {sets}"  # nosec B608 # constant names
        return f" ON CONFLICT ({', '.join(conflict)}) DO NOTHING"

    def _copy(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
        # Binary COPY: the server skips parsing text (timestamps above all) and psycopg formats less;
        # much faster per row than text COPY for our wide rows.
        types = _binary_copy_types(table.removeprefix("_stage_"), tuple(columns))
        raw = self.conn.connection.driver_connection
        with raw.cursor() as cur:  # type: ignore[union-attr]
            with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)

    def _copy_upsert(self, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]],
                     conflict: Sequence[str], update_columns: Sequence[str]) -> None:
        stage = self.stage(table, columns, rows)
        cols = ", ".join(columns)
        self.conn.exec_driver_sql(
            f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}"  # noqa: S608  # nosec B608 # constant names
            + self._conflict_clause(conflict, update_columns)
        )


_PG_BINARY_TYPES = {"BIGINT": "int8", "INTEGER": "int4", "BOOLEAN": "bool", "FLOAT": "float8",
                     "DOUBLE PRECISION": "float8", "TIMESTAMP WITH TIME ZONE": "timestamptz"}


@lru_cache(maxsize=64)
def _binary_copy_types(table: str, columns: tuple[str, ...]) -> list[str]:
    """The type each column is sent as in a binary COPY, from the schema.

    Text-like columns (varchar, text, and JSON, whose values we hand over as JSON text already) go as
    ``text``: the binary form of all of them is the UTF-8 text, and psycopg's ``json`` dumper would
    encode our JSON text a second time.
    """
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    table_def = metadata.tables[table]
    out = []
    for name in columns:
        ddl = table_def.c[name].type.compile(dialect=dialect)
        out.append(_PG_BINARY_TYPES.get(ddl, "text"))
    return out



def _array_literal(values: Sequence[Any], element: str) -> str:
    """One column of an ``unnest`` as a PostgreSQL array literal: built with joins (C loops) where
    psycopg would adapt every element of a list in Python, most of the client time of a large batch."""
    if element in ("BIGINT", "INTEGER"):
        return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"
    if element == "BOOLEAN":
        return "{" + ",".join("NULL" if v is None else ("t" if v else "f") for v in values) + "}"
    if element == "TIMESTAMP WITH TIME ZONE":
        # ISO 8601 with its offset: digits, '-', ':', '.', '+' and 'T' need no quoting in an array literal.
        return "{" + ",".join("NULL" if v is None else v.isoformat() for v in values) + "}"
    if element.startswith(("FLOAT", "DOUBLE", "NUMERIC", "REAL")):
        return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"
    return text_array(values)


@lru_cache(maxsize=64)
def _pg_array_types(table: str, columns: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Per column, the element type of its array in ``UPDATE … FROM unnest`` and the cast back: JSON goes
    as text (the JSON text ``rows`` made) and is cast to json; every other column as its own type."""
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    table_def = metadata.tables[table]
    return tuple(
        ("text", "::json") if isinstance(table_def.c[name].type, JSON)
        else (table_def.c[name].type.compile(dialect=dialect), "")
        for name in columns
    )
