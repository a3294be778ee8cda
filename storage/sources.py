"""Data sources: named origins of data with their settings."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Row, func, or_, select

from storage.ids import new_uuid
from storage.schema import data_sources, source_customers

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._\-]{0,99}$")


class SourceExists(ValueError):
    """A data source of that name exists already."""


class SourceNotFound(LookupError):
    """No data source has that name or uuid."""


def validate_source_name(name: str) -> str:
    """A source name: 1–100 letters, digits, spaces, dots, dashes or underscores; no colon.

    The colon is reserved: ``SOURCE:EXTERNAL_ID`` names a customer on the command line.
    """
    cleaned = name.strip()
    if not _NAME_RE.match(cleaned):
        raise ValueError(
            f"invalid source name {name!r}: use 1-100 letters, digits, spaces, '.', '-' or '_' "
            "(starting with a letter or digit)"
        )
    return cleaned


def create_source(conn: Connection, name: str, kind: str, settings: dict[str, Any] | None = None) -> Row[Any]:
    """Create a data source of ``kind`` and return its row (callers check the kind: ``jobs.sources``).

    Raises:
        SourceExists: when the name is taken.
        ValueError: for an invalid name.
    """
    name = validate_source_name(name)
    if get_source(conn, name) is not None:
        raise SourceExists(f"a data source named {name!r} exists already")
    conn.execute(
        data_sources.insert().values(
            uuid=new_uuid("ds"),
            name=name,
            kind=kind,
            settings=settings or {},
            enabled=True,
            created_at=datetime.now(timezone.utc),
        )
    )
    row = get_source(conn, name)
    assert row is not None
    return row


def get_source(conn: Connection, name_or_uuid: str) -> Row[Any] | None:
    """The data source with that name or ``ds_…`` uuid, or None."""
    return conn.execute(
        select(data_sources).where(
            or_(data_sources.c.name == name_or_uuid, data_sources.c.uuid == name_or_uuid)
        )
    ).first()


def require_source(conn: Connection, name_or_uuid: str) -> Row[Any]:
    """Like :func:`get_source` but raising :class:`SourceNotFound` with the known names."""
    row = get_source(conn, name_or_uuid)
    if row is None:
        names = [r.name for r in list_sources(conn)]
        known = f" (known: {', '.join(names)})" if names else " (no sources yet: add one with `funnelsync sources add`)"
        raise SourceNotFound(f"no data source named {name_or_uuid!r}{known}")
    return row


def get_or_create_source(conn: Connection, name: str, kind: str) -> Row[Any]:
    """The source ``name``, created with ``kind`` when missing; refuses a kind mismatch."""
    row = get_source(conn, name)
    if row is None:
        return create_source(conn, name, kind)
    return row


def list_sources(conn: Connection) -> list[Row[Any]]:
    """Every data source, by name."""
    return list(conn.execute(select(data_sources).order_by(data_sources.c.name)))


def update_source_settings(conn: Connection, source_id: int, settings: dict[str, Any]) -> None:
    """Replace a source's settings."""
    conn.execute(data_sources.update().where(data_sources.c.id == source_id).values(settings=settings))


def rename_source(conn: Connection, source_id: int, name: str) -> None:
    """Give a source a new name (callers check it is free); its uuid, and so its locks, stay."""
    conn.execute(data_sources.update().where(data_sources.c.id == source_id).values(name=validate_source_name(name)))


def set_source_enabled(conn: Connection, source_id: int, enabled: bool) -> None:
    """Enable or disable a source (disabled sources are skipped by sync-all)."""
    conn.execute(data_sources.update().where(data_sources.c.id == source_id).values(enabled=enabled))


def source_customer_count(conn: Connection, source_id: int) -> int:
    """How many source customers the source holds."""
    return int(conn.execute(
        select(func.count()).select_from(source_customers).where(source_customers.c.data_source_id == source_id)
    ).scalar_one())
