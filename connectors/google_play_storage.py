"""Google Play's monthly sales reports, read from the developer's Cloud Storage bucket.

Google Play writes ``sales/salesreport_YYYYMM.zip`` into the developer's bucket
(``pubsite_prod_rev_<developer id>``), rewriting the current month's file as the month goes on (each
rewrite is a new object ``generation``) and settling it some days after the month ends. This module
lists the reports with ``google-cloud-storage`` (as a service account the developer invited in the Play
Console) and says which to read: a month is read when its generation is one not read before, and is
**final** once it has been read as it stood ``FINAL_AFTER_DAYS`` after the month ended; final months
are not looked at again. What was read rides in the cursor: ``{"final_through": "YYYYMM", "read":
{"YYYYMM": generation}}`` (only the months not yet final). Rows are applied by the Daily Sales Report
import, which writes only the subscriptions whose facts changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from connectors.base import SettingsError

REPORT_PREFIX = "sales/salesreport_"
REPORT_NAME = re.compile(r"^sales/salesreport_(\d{4})(\d{2})\.zip$")
FINAL_AFTER_DAYS = 7
BUCKET_NAME = re.compile(r"^pubsite_prod_(rev_)?\d+$")


@dataclass(frozen=True)
class Report:
    """One month's report object as listed."""

    month: str  # YYYYMM
    name: str
    generation: int
    updated: datetime | None


def month_end(month: str) -> date:
    """The last day of ``YYYYMM``."""
    year, mon = int(month[:4]), int(month[4:])
    first_next = date(year + (mon == 12), mon % 12 + 1, 1)
    return first_next - timedelta(days=1)


def reports(blobs: Iterable[Any]) -> list[Report]:
    """The monthly sales reports among listed objects (anything else under ``sales/`` is ignored), by month."""
    found = []
    for blob in blobs:
        match = REPORT_NAME.match(str(blob.name))
        if match and 1 <= int(match.group(2)) <= 12:
            found.append(Report(match.group(1) + match.group(2), str(blob.name), int(blob.generation), blob.updated))
    return sorted(found, key=lambda r: r.month)


def to_read(found: list[Report], cursor: Mapping[str, Any] | None) -> list[Report]:
    """The reports of months not final whose generation was not read yet, oldest month first."""
    final_through = str((cursor or {}).get("final_through") or "")
    read = (cursor or {}).get("read") or {}
    return [r for r in found if r.month > final_through and read.get(r.month) != r.generation]


def after_reading(cursor: Mapping[str, Any] | None, report: Report, today: date) -> dict[str, Any]:
    """The cursor once ``report`` is applied (or seen unchanged): its generation recorded, and the months
    that are now final (contiguously from the oldest) folded into ``final_through``."""
    read = dict((cursor or {}).get("read") or {})
    read[report.month] = report.generation
    final_through = str((cursor or {}).get("final_through") or "")
    return _fold(final_through, read, today)


def settle(cursor: Mapping[str, Any] | None, found: list[Report], today: date) -> dict[str, Any]:
    """The cursor after a run that read everything due: months read as they stand and past the settling
    delay become final."""
    read = {m: g for m, g in ((cursor or {}).get("read") or {}).items()}
    current = {r.month: r.generation for r in found}
    read = {m: g for m, g in read.items() if current.get(m) == g}
    return _fold(str((cursor or {}).get("final_through") or ""), read, today)


def _fold(final_through: str, read: dict[str, int], today: date) -> dict[str, Any]:
    for month in sorted(read):
        if today > month_end(month) + timedelta(days=FINAL_AFTER_DAYS):
            final_through = max(final_through, month)
            del read[month]
        else:
            break
    read = {m: g for m, g in read.items() if m > final_through}
    return {"final_through": final_through, "read": read}


def check_bucket(settings: Mapping[str, Any]) -> str:
    """The ``bucket`` setting.

    Raises:
        SettingsError: missing, or not a Play Console reports bucket name.
    """
    bucket = str(settings.get("bucket") or "").strip().removeprefix("gs://").rstrip("/")
    if not BUCKET_NAME.match(bucket):
        raise SettingsError(
            "google_play: bucket must be the Play Console's reports bucket, pubsite_prod_rev_<developer id> "
            f"(Download reports → Copy Cloud Storage URI), got {bucket or 'nothing'!r}"
        )
    return bucket


def storage_client(settings: Mapping[str, Any]) -> Any:
    """A ``google.cloud.storage.Client`` authenticated as the source's service account.

    Without ``service_account`` only an emulator (``STORAGE_EMULATOR_HOST``) can be reached anonymously.

    Raises:
        SettingsError: ``service_account`` is not a service-account JSON key.
    """
    from google.cloud import storage

    raw = settings.get("service_account")
    if not raw:
        return storage.Client()
    try:
        info = json.loads(raw) if isinstance(raw, str) else dict(raw)
        return storage.Client.from_service_account_info(info, project=info.get("project_id"))
    except (ValueError, KeyError, TypeError):
        raise SettingsError(
            "google_play: service_account must be the JSON key of a service account (its text, not a path)"
        ) from None


def now_utc() -> datetime:
    return datetime.now(UTC)
