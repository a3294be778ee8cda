"""Adding a data source: its kind checked against the registry, its literal secrets kept out of the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, Row

from connectors.registry import SOURCE_KINDS, kinds
from jobs.secrets import protect_settings, secrets_dir
from storage.sources import create_source


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
