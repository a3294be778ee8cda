"""Secret settings: kept out of the database, resolved at run time.

A secret setting (``api_key``, ``private_key``…) of a data source is one of:

- ``env:VAR``: read from the environment variable ``VAR`` when the sync runs;
- ``prefect-secret:BLOCK``: read from the Prefect Secret block ``BLOCK`` when the sync runs;
- ``local-secret:REF``: a literal given to ``sources add``, moved to the file
  ``$FUNNELSYNC_HOME/secrets/REF`` (mode 0600) so the database only holds the reference;
- a literal, only in memory: ``protect_settings`` turns it into a ``local-secret:`` reference before
  anything is stored.

Resolved values never appear in an error message: errors name the setting and the reference.
"""

from __future__ import annotations

import os
import re
import secrets as _random
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

SECRET_WORDS = ("key", "secret", "token", "password", "private")
REFERENCE_PREFIXES = ("env", "prefect-secret", "local-secret")
_REF_RE = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class SecretResolutionError(ValueError):
    """A secret reference cannot be resolved (unset variable, missing block or file)."""


def secrets_dir() -> Path:
    """``$FUNNELSYNC_HOME/secrets`` (created 0700 on first use)."""
    from storage.db import funnelsync_home

    return funnelsync_home() / "secrets"


def secret_setting_names(kind: str, settings: Mapping[str, Any]) -> set[str]:
    """The settings of ``kind`` that are secrets: its declared schema, else names that look secret."""
    from connectors.registry import SOURCE_KINDS, settings_schema

    schema = settings_schema(kind) if kind in SOURCE_KINDS else None
    if schema is not None:
        return {s.name for s in schema if s.secret}
    return {k for k in settings if any(word in k.lower() for word in SECRET_WORDS)}


def is_reference(value: Any) -> bool:
    """True for ``env:…``, ``prefect-secret:…`` and ``local-secret:…`` values."""
    return isinstance(value, str) and value.split(":", 1)[0] in REFERENCE_PREFIXES and ":" in value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:60] or "source"


def store_local_secret(source_name: str, setting: str, value: str) -> str:
    """Write ``value`` to a new 0600 file under the secrets directory; return its ``local-secret:`` reference.

    The file name carries a random part so a second ``sources add`` of the same name (refused later
    by the database) never overwrites the secret of the existing source.
    """
    directory = secrets_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ref = f"{_slug(source_name)}.{_slug(setting)}.{_random.token_hex(6)}"
    fd = os.open(directory / ref, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    return f"local-secret:{ref}"


def protect_settings(kind: str, source_name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """Return settings safe to store: literal secrets replaced by ``local-secret:`` references.

    For kinds that declare a settings schema (the connectors) the settings are also checked against it
    (unknown or missing keys), so a typo fails at ``sources add`` rather than at the first sync.

    Raises:
        ValueError: for settings the kind refuses.
    """
    from connectors.base import SettingsError, validate_settings
    from connectors.registry import SOURCE_KINDS, source_class

    if kind in SOURCE_KINDS and source_class(kind).settings_schema is not None:
        try:
            validate_settings(source_class(kind), settings)
        except SettingsError as exc:
            raise ValueError(str(exc)) from None
    protected = dict(settings)
    for name in secret_setting_names(kind, settings):
        value = protected.get(name)
        if isinstance(value, str) and value and not is_reference(value):
            protected[name] = store_local_secret(source_name, name, value)
    return protected


def resolve_value(setting: str, value: Any) -> Any:
    """Resolve one setting value; non-references pass through unchanged.

    Raises:
        SecretResolutionError: naming the setting and the reference, never a secret value.
    """
    if not is_reference(value):
        return value
    prefix, _, ref = value.partition(":")
    if prefix == "env":
        resolved = os.environ.get(ref)
        if not resolved:
            raise SecretResolutionError(f"setting {setting} refers to environment variable {ref}, which is not set")
        return resolved
    if prefix == "prefect-secret":
        try:
            from prefect.blocks.system import Secret

            # Secret.load dispatches to its sync form outside an event loop.
            block = cast(Any, Secret.load(ref))
        except Exception as exc:  # noqa: BLE001  ValueError for a missing block, connection errors for the API
            raise SecretResolutionError(
                f"setting {setting} refers to Prefect Secret block {ref!r}, which cannot be loaded "
                f"({type(exc).__name__}); create it with `prefect block create secret` or check PREFECT_API_URL"
            ) from None
        return block.get()
    if not _REF_RE.match(ref):
        raise SecretResolutionError(f"setting {setting}: malformed local secret reference")
    path = secrets_dir() / ref
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        raise SecretResolutionError(
            f"setting {setting} refers to local secret {ref}, missing under {secrets_dir()}: set it again "
            "with a new source or use env:VAR"
        ) from None


def resolve_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Every setting with its references resolved (for handing to a connector, never for storing)."""
    return {name: resolve_value(name, value) for name, value in settings.items()}


def resolve_settings_leniently(settings: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Every setting resolved, an unresolvable one left empty; with the problems, one message each.

    For a door that must still answer the caller as if the setting were merely absent (a webhook whose
    secret cannot be read is unverifiable, not a server error) while telling the operator why.
    """
    resolved: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in settings.items():
        try:
            resolved[name] = resolve_value(name, value)
        except SecretResolutionError as exc:
            resolved[name] = ""
            problems.append(str(exc))
    return resolved, problems


def secret_values(kind: str, settings: Mapping[str, Any]) -> list[str]:
    """The resolved secret values, so callers can scrub them from any message they print."""
    names = secret_setting_names(kind, settings)
    return [str(v) for k, v in settings.items() if k in names and v]
