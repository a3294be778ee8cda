"""Google Play's monthly sales reports, read from the developer's Cloud Storage bucket.

Google Play writes ``sales/salesreport_YYYYMM.zip`` into the developer's bucket
(``pubsite_prod_rev_<developer id>``), rewriting the current month's file as the month goes on (each
rewrite is a new object ``generation``) and settling it some days after the month ends. This module
lists the reports with ``google-cloud-storage`` (as a service account the developer invited in the Play
Console) and says which to read: a month is read when its generation is one not read before, and is
**final** once it has been read as it stood ``FINAL_AFTER_DAYS`` after the month ended; final months
are not looked at again. What was read rides in the cursor: ``{"final_through": "YYYYMM", "read":
{"YYYYMM": generation}, "watermark": "YYYYMM"}`` (``read``: only the months not yet final).

``BucketReports`` is the pulled stream (``sales_reports``) of the ``google_play`` connector: the reports
due are downloaded and folded together (a renewal in May joins its April sign-up), then written in
batches of subscriptions, each merged with what earlier runs stored (earliest dates win, through the
``stored_records`` lookup the sync hands over), so a month read again writes only the subscriptions
whose facts changed. A batch's cursor names the reports being read and how far (``reading``,
``page_token``): a run killed between batches resumes there while those reports are unchanged.

Cloud Storage's requests are retried by this module, not by the client library (``retry=None``), so the
answers are treated as every connector's: 408, 429 and 5xx waited out (``Retry-After`` honoured, else
exponential backoff, Google's documented retry strategy), 401/403 and a refused service-account key
fail at once naming the setting, any other error in one line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import chain
from typing import Any, ClassVar, TypeVar

from connectors.base import Batch, Connector, SettingsError, Stream
from connectors.files.google_play_report import SalesReportError, iter_sales_report, order_record, sales_orders
from connectors.http import DEFAULT_MAX_ATTEMPTS, ApiError, CredentialsError, wait_seconds
from connectors.paging import PaginationLoopError

REPORT_PREFIX = "sales/salesreport_"
REPORT_NAME = re.compile(r"^sales/salesreport_(\d{4})(\d{2})\.zip$")
FINAL_AFTER_DAYS = 7
BUCKET_NAME = re.compile(r"^pubsite_prod_(rev_)?\d+$")
STREAM = "sales_reports"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

T = TypeVar("T")
# Given external ids (order numbers): what earlier runs stored of them, ``(records, subscriptions)``,
# each keyed by external id (a source customer's row and its subscription's, as mappings).
StoredLookup = Callable[[list[str]], tuple[Mapping[str, Any], Mapping[str, Any]]]


class BucketError(ApiError):
    """The bucket could not be listed or a report downloaded or read (the message names which, never a secret)."""


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


def watermark_of(cursor: Mapping[str, Any]) -> str:
    """The latest month the cursor has read (final or not): what only moves forward."""
    return max([str(cursor.get("final_through") or ""), *(cursor.get("read") or {})])


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
        return _quiet(storage.Client())
    try:
        info = json.loads(raw) if isinstance(raw, str) else dict(raw)
        return _quiet(storage.Client.from_service_account_info(info, project=info.get("project_id")))
    except (ValueError, KeyError, TypeError):
        raise SettingsError(
            "google_play: service_account must be the JSON key of a service account (its text, not a path)"
        ) from None


def _quiet(client: Any) -> Any:
    # The client looks each bucket's metadata up in a background thread only to label OpenTelemetry spans,
    # which nothing here exports; the lookup needs storage.buckets.get, which a service account invited to
    # the Play Console's reports does not have. Without its cache the client makes no such request.
    if hasattr(client, "_bucket_metadata_cache"):
        client._bucket_metadata_cache = None
    return client


def now_utc() -> datetime:
    return datetime.now(UTC)


class BucketReports(Connector):
    """The ``sales_reports`` stream: the months due read from the bucket (see the module docstring)."""

    streams: ClassVar[tuple[Stream, ...]] = (Stream(STREAM, "order", None, "read_sales_reports"),)
    stored_records: StoredLookup | None = None
    # What the last read saw, for the summary of ``funnelsync import google-play-bucket``.
    listed: int = 0
    months_read: tuple[Report, ...] = ()

    @classmethod
    def pulls(cls, settings: Mapping[str, Any]) -> bool:
        """Only a source with a reports bucket is pulled; the others are fed by pushes alone."""
        return bool(settings.get("bucket"))

    def read_sales_reports(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """The subscriptions of the reports due, in batches; the last batch's cursor has them read."""
        bucket = check_bucket(self.settings)
        today = self.started_at.date()
        client = storage_client(self.settings)
        found = self._listed(client, bucket)
        self.listed, self.months_read = len(found), ()
        due = to_read(found, state)
        if not due:
            settled = {**settle(state, found, today)}
            settled["watermark"] = watermark_of(settled)
            if settled != state:
                yield Batch(STREAM, [], settled, 0)
            return
        reading = {r.month: r.generation for r in due}
        start = int(state.get("page_token") or 0) if state.get("reading") == reading else 0
        orders = sales_orders(chain.from_iterable(self._rows(client, bucket, r) for r in due))
        self.months_read = tuple(due)
        cursor = dict(state)
        for report in due:
            cursor = after_reading(cursor, report, today)
        done = settle(cursor, found, today)
        done["watermark"] = watermark_of(done)
        names = sorted(orders)
        for offset in range(start, len(names), self.batch_size):
            chunk = names[offset:offset + self.batch_size]
            stored, subs = self.stored_records(chunk) if self.stored_records else ({}, {})
            records = [r for r in (order_record(orders[o], stored.get(o), subs.get(o)) for o in chunk) if r]
            end = offset + len(chunk)
            after = done if end >= len(names) else {
                **{k: v for k, v in state.items() if k not in ("page_token", "reading")},
                "watermark": watermark_of(state),
                "reading": reading, "page_token": str(end)}
            yield Batch(STREAM, records, after, len(chunk))
        if start >= len(names):  # resumed after the last batch: only the cursor is left to commit
            yield Batch(STREAM, [], done, 0)

    def _listed(self, client: Any, bucket: str) -> list[Report]:
        """Every report object under ``sales/``, page by page (each page retried on its own)."""
        blobs: list[Any] = []
        token: str | None = None
        seen: set[str] = set()
        where = f"listing gs://{bucket}/{REPORT_PREFIX}*"
        while True:
            def page(token: str | None = token) -> tuple[list[Any], str | None]:
                listing = client.list_blobs(bucket, prefix=REPORT_PREFIX, page_token=token, retry=None)
                items = list(next(listing.pages))
                return items, listing.next_page_token

            items, token = self._call(page, where)
            blobs.extend(items)
            if not token:
                return reports(blobs)
            if token in seen:
                raise PaginationLoopError(f"{self.source_name}: {where}: Cloud Storage handed back the page token "
                                          f"{token[:60]!r} a second time: refusing to page in a loop")
            seen.add(token)

    def _rows(self, client: Any, bucket: str, report: Report) -> Iterator[Any]:
        where = f"downloading gs://{bucket}/{report.name}"
        blob = client.bucket(bucket).blob(report.name, generation=report.generation)
        data = self._call(lambda: blob.download_as_bytes(retry=None), where)
        try:
            yield from iter_sales_report(data, [], f"gs://{bucket}/{report.name}")
        except SalesReportError as exc:
            raise BucketError(f"{self.source_name}: {exc}; nothing of the reports due was written") from None

    def _call(self, fn: Callable[[], T], where: str) -> T:
        """``fn()`` with the retry policy of every connector."""
        from google.api_core import exceptions as google_exceptions
        from google.auth import exceptions as auth_exceptions
        from requests import exceptions as requests_exceptions

        for attempt in range(1, DEFAULT_MAX_ATTEMPTS + 1):
            try:
                return fn()
            except auth_exceptions.RefreshError as exc:
                raise CredentialsError(
                    f"{self.source_name}: Google refused the service account's key when asked for a token "
                    f"({_refusal(exc)}): check the service_account setting (a key of a service account "
                    "the Play Console invited, not deleted)") from None
            except google_exceptions.GoogleAPICallError as exc:
                status = int(exc.code or 0)
                if status in (401, 403):
                    raise CredentialsError(
                        f"{self.source_name}: {where}: {status} {exc.message}: check the service_account setting "
                        "(the service account needs the Play Console's financial data permission)") from None
                if status not in RETRY_STATUSES or attempt == DEFAULT_MAX_ATTEMPTS:
                    raise BucketError(f"{self.source_name}: {where} failed: {status} {exc.message}",
                                      status) from None
                self._sleep(wait_seconds(attempt, getattr(exc, "response", None)))
            except (requests_exceptions.ConnectionError, requests_exceptions.Timeout) as exc:
                if attempt == DEFAULT_MAX_ATTEMPTS:
                    raise BucketError(f"{self.source_name}: {where} failed after {attempt} attempts: "
                                      f"{type(exc).__name__}") from None
                self._sleep(wait_seconds(attempt, None))
        raise AssertionError("unreachable")  # pragma: no cover

    def _sleep(self, seconds: float) -> None:
        from connectors.http import sleep

        (self.sleep_fn or sleep)(seconds)


def _refusal(exc: Exception) -> str:
    """``invalid_grant: Invalid JWT Signature.`` from a RefreshError, without the key or the assertion."""
    details = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
    code, text = details.get("error"), details.get("error_description")
    if code:
        return f"{code}: {text}" if text else str(code)
    return str(exc.args[0]).split(",")[0][:120] if exc.args else type(exc).__name__
