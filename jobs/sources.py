"""Managing data sources: adding one (its kind checked against the registry, its literal secrets kept out of
the database), showing, editing, disabling, enabling and removing it. Every door (the CLI, the API) calls these."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Row, func, select

from connectors.registry import SOURCE_KINDS, kinds
from jobs.secrets import SECRET_WORDS, is_reference, protect_settings, secret_setting_names, secrets_dir
from storage.schema import source_customers, sync_state
from storage.source_removal import SourceFootprint, source_footprint
from storage.source_removal import remove_source as delete_source
from storage.sources import (
    SourceExists,
    create_source,
    get_source,
    list_sources,
    rename_source,
    require_source,
    set_source_enabled,
    update_source_settings,
    validate_source_name,
)


def check_kind(kind: str) -> str:
    """``kind`` when the registry knows it.

    Raises:
        ValueError: naming the known kinds.
    """
    if kind not in SOURCE_KINDS:
        raise ValueError(f"unknown source kind {kind!r}: expected one of {', '.join(kinds())}")
    return kind


def add_source(engine: Engine, name: str, kind: str, settings: dict[str, str]) -> Row[Any]:
    """Create the source ``name`` of ``kind``; literal secrets become ``local-secret:`` references first.

    Raises:
        ValueError: an unknown kind, settings the kind refuses, a name taken or invalid
            (``storage.sources.SourceExists`` is one), or a secrets folder that cannot be written.
    """
    check_kind(kind)
    try:
        stored = protect_settings(kind, name, settings)
    except OSError as exc:  # an unwritable secrets folder
        raise ValueError(str(exc)) from None
    try:
        with engine.begin() as conn:
            return create_source(conn, name, kind, stored)
    except ValueError:
        # The refused source's literal secrets were already written out: remove them, or a refused
        # duplicate leaves a key on disk that no source refers to.
        remove_new_local_secrets(settings, stored)
        raise


def remove_new_local_secrets(given: dict[str, str], stored: dict[str, Any]) -> None:
    """Delete the ``local-secret:`` files written for ``stored`` (not references the user gave)."""
    for key, value in stored.items():
        if isinstance(value, str) and value.startswith("local-secret:") and given.get(key) != value:
            (secrets_dir() / value.split(":", 1)[1]).unlink(missing_ok=True)


def masked_settings(kind: str, settings: dict[str, Any]) -> dict[str, Any]:
    """A source's settings fit to show: a secret's reference (``env:…``, ``prefect-secret:…``,
    ``local-secret:…``) as it is, any literal secret as ``****``."""
    secret = secret_setting_names(kind, settings) | {
        k for k in settings if any(word in k.lower() for word in SECRET_WORDS)
    }
    return {
        k: ("****" if k in secret and v not in (None, "") and not is_reference(v) else v) for k, v in settings.items()
    }


def describe_source(conn: Connection, row: Row[Any]) -> dict[str, Any]:
    """What ``sources show`` and ``sources list --json`` print: the row, settings masked, its counts and
    last successful sync."""
    counts = conn.execute(
        select(func.count()).select_from(source_customers).where(source_customers.c.data_source_id == row.id)
    ).scalar_one()
    last = conn.execute(
        select(func.max(sync_state.c.last_success_at)).where(sync_state.c.data_source_id == row.id)
    ).scalar_one()
    return {
        "uuid": row.uuid,
        "name": row.name,
        "kind": row.kind,
        "enabled": bool(row.enabled),
        "settings": masked_settings(str(row.kind), dict(row.settings or {})),
        "created_at": row.created_at.isoformat(),
        "source_customers": int(counts),
        "last_success_at": last.isoformat() if last else None,
    }


def describe_sources(engine: Engine) -> list[dict[str, Any]]:
    """Every source as :func:`describe_source` has it, by name."""
    with engine.connect() as conn:
        return [describe_source(conn, row) for row in list_sources(conn)]


def show_source(engine: Engine, name: str) -> dict[str, Any]:
    """One source as :func:`describe_source` has it.

    Raises:
        storage.sources.SourceNotFound: naming the known sources.
    """
    with engine.connect() as conn:
        return describe_source(conn, require_source(conn, name))


def set_enabled(engine: Engine, name: str, enabled: bool) -> tuple[Row[Any], bool]:
    """Enable or disable the source ``name``; the row and whether that changed anything.

    A disabled source is skipped by sync-all and its schedules, refused by ``sync`` and its webhooks
    answer 409 (the vendor retries until it is enabled again); its data stays.
    """
    with engine.begin() as conn:
        row = require_source(conn, name)
        changed = bool(row.enabled) != enabled
        if changed:
            set_source_enabled(conn, row.id, enabled)
        return require_source(conn, row.uuid), changed


def edit_source(
    engine: Engine, name: str, given: dict[str, str], unset: list[str], rename: str | None = None
) -> tuple[Row[Any], list[str]]:
    """Change settings of the source ``name`` (``given`` set, ``unset`` removed) and maybe its name;
    the new row and the setting names that changed.

    The result is checked against the kind's settings as ``sources add`` checks them; literal secrets
    become ``local-secret:`` references, and the files of the ones replaced are removed once committed.

    Raises:
        storage.sources.SourceNotFound, ValueError: nothing is changed.
    """
    with engine.connect() as conn:
        row = require_source(conn, name)
    old = dict(row.settings or {})
    missing = [k for k in unset if k not in old]
    if missing:
        raise ValueError(f"source {row.name!r} has no setting {', '.join(missing)} to unset")
    both = sorted(set(unset) & set(given))
    if both:
        raise ValueError(f"setting {', '.join(both)} is both set and unset")
    wanted = {k: v for k, v in old.items() if k not in unset}
    wanted.update(given)
    new_name = validate_source_name(rename) if rename else str(row.name)
    try:
        stored = protect_settings(str(row.kind), new_name, wanted)
    except OSError as exc:
        raise ValueError(str(exc)) from None
    try:
        with engine.begin() as conn:
            if new_name != row.name:
                if get_source(conn, new_name) is not None:
                    raise SourceExists(f"a data source named {new_name!r} exists already")
                rename_source(conn, row.id, new_name)
            update_source_settings(conn, row.id, stored)
    except ValueError:
        remove_new_local_secrets(wanted, stored)
        raise
    for key, value in old.items():
        if stored.get(key) != value and isinstance(value, str) and value.startswith("local-secret:"):
            (secrets_dir() / value.split(":", 1)[1]).unlink(missing_ok=True)
    changed = sorted(k for k in set(old) | set(stored) if old.get(k) != stored.get(k))
    with engine.connect() as conn:
        return require_source(conn, row.uuid), changed


def source_removal_preview(engine: Engine, name: str) -> tuple[Row[Any], SourceFootprint]:
    """The source ``name`` and what removing it would delete and keep (nothing changes)."""
    with engine.connect() as conn:
        row = require_source(conn, name)
        return row, source_footprint(conn, row.id)


def remove_source(engine: Engine, name: str) -> tuple[Row[Any], SourceFootprint]:
    """Remove the source ``name`` and what only it holds, in one transaction (``storage.source_removal``:
    the merge and edit logs stay); then its local secret files."""
    with engine.begin() as conn:
        row = require_source(conn, name)
        footprint = delete_source(conn, row.id)
    for value in (row.settings or {}).values():
        if isinstance(value, str) and value.startswith("local-secret:"):
            (secrets_dir() / value.split(":", 1)[1]).unlink(missing_ok=True)
    return row, footprint
