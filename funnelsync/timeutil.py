"""Time zone helpers: everything is stored in UTC; input without a zone is read in the account zone."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """Return the ZoneInfo for an IANA name, with a clear error for a bad one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as 'Europe/Berlin'") from exc


def account_timezone() -> ZoneInfo:
    """The account time zone: ``FUNNELSYNC_TIMEZONE`` (IANA name), default UTC."""
    return zone(os.environ.get("FUNNELSYNC_TIMEZONE", "UTC") or "UTC")


def to_utc(value: datetime, tz: ZoneInfo | None = None) -> datetime:
    """Make ``value`` aware UTC; a naive value is read in ``tz`` (default: the account zone)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz or account_timezone())
    return value.astimezone(UTC)


def from_epoch(seconds: int | float | str | None) -> datetime | None:
    """Epoch seconds (as most billing APIs send them) to an aware UTC datetime; None passes through."""
    if seconds is None or seconds == "":
        return None
    return datetime.fromtimestamp(float(seconds), tz=UTC)


def epoch_seconds(moment: datetime) -> int:
    """An aware datetime as whole epoch seconds (the cursor of APIs that filter on them)."""
    return int(moment.timestamp())


def parse_iso(value: str | None) -> datetime | None:
    """An ISO-8601 string from an API (``Z`` or offset) to aware UTC; naive read as UTC (APIs speak UTC)."""
    if value is None or value == "":
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with offset for output, None passes through."""
    return None if value is None else value.astimezone(UTC).isoformat()
