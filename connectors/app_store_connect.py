"""App Store Connect: free-trial starts and their conversions from the Subscription Event report (v1_3).

Reads top to bottom: constants, the ES256 token, the report parser (pure), how trial cohorts become
records, and the connector that fetches one report per day.

Apple's reports are aggregated and anonymous: a row says "3 subscribers of subscription X in country DE
started a free trial on 2025-01-03" (``Quantity``), with no subscriber id. The rule: records only
for subscribers who start a **Free Trial introductory offer** (``Event`` = ``Start Introductory Offer``,
older files ``Start Introductory Price``, with ``Subscription Offer Type`` = ``Free Trial``); lead
created = the date of the first transaction = the event date; free trial started = the event date.
So each unit of such a row becomes one record with a deterministic id,
``<event date>/<Subscription Apple ID>/<Country>/<n>`` (n = 1…the day's trial count for that
subscription and country), which makes re-reading a day change nothing. ``Paid Subscription from
Introductory Offer`` rows carry the trial's ``Original Start Date``: their ``Quantity`` converts the next
unconverted records of that cohort (first paid = the conversion's event date). The per-cohort trial and
conversion counts of the last ``COHORT_DAYS`` days ride in the cursor (bounded: older cohorts are dropped).

Fetching: ``GET /v1/salesReports?filter[reportType]=SUBSCRIPTION_EVENT&filter[reportSubType]=SUMMARY&
filter[frequency]=DAILY&filter[version]=1_3&filter[vendorNumber]=…&filter[reportDate]=YYYY-MM-DD``, one
request per day, answered with gzip TSV. A 404 means no report for that day, not yet: for a recent
day (``PUBLISH_DELAY_DAYS``) the run stops there and tries again next time; an older day that is still
missing goes into the cursor's ``pending`` days, asked again first by every run for ``RECHECK_DAYS``
after it (a report published late is read then; only after that is the day taken as one without
events). The cursor is the last report date read and the days still pending.

Report days are calendar days of the agreement's time zone, Pacific Time (``America/Los_Angeles``)
for the worldwide agreements ("Reports for worldwide agreements use PST/PDT", Apple's Sales and
Trends help; the setting ``report_time_zone`` names another zone): an event date is midnight there,
and "today" (which days may exist yet) is today there.
"""

from __future__ import annotations

import base64
import csv
import gzip
import io
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from connectors.base import Batch, Connector, Setting, SettingsError, Stream
from connectors.http import ApiError
from connectors.paging import PaginationLoopError
from funnelsync.records import SourceCustomerRecord, SubscriptionFact

BASE_URL = "https://api.appstoreconnect.apple.com"
REPORT_PATH = "/v1/salesReports"
TOKEN_LIFETIME_SECONDS = 20 * 60  # Apple refuses tokens valid for longer
PUBLISH_DELAY_DAYS = 2  # reports land about a day after the date they cover
COHORT_DAYS = 120  # conversions later than this after the trial start are not matched
DEFAULT_BACKFILL_DAYS = 30
RECHECK_DAYS = 14  # a day whose report is still missing this long after it has no events
REPORT_TIME_ZONE = "America/Los_Angeles"
PACIFIC = ZoneInfo(REPORT_TIME_ZONE)

TRIAL_EVENTS = frozenset({"Start Introductory Offer", "Start Introductory Price"})
CONVERSION_EVENTS = frozenset(
    {"Paid Subscription from Introductory Offer", "Paid Subscription from Introductory Price"}
)
FREE_TRIAL = "Free Trial"

# Our name → accepted header labels. Apple renamed "Promotional Offer Name" to "Subscription Offer Name".
COLUMNS: dict[str, tuple[str, ...]] = {
    "event_date": ("Event Date",),
    "event": ("Event",),
    "app_apple_id": ("App Apple ID",),
    "subscription_apple_id": ("Subscription Apple ID",),
    "offer_type": ("Subscription Offer Type",),
    "offer_name": ("Subscription Offer Name", "Promotional Offer Name"),
    "original_start_date": ("Original Start Date",),
    "country": ("Country",),
    "quantity": ("Quantity",),
}
REQUIRED = ("event_date", "event", "subscription_apple_id", "offer_type", "original_start_date", "country", "quantity")


class ReportFormatError(ValueError):
    """A report whose header lacks a required column (or is not a report at all)."""


# --------------------------------------------------------------------------------------------------
# The token
# --------------------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(issuer_id: str, key_id: str, private_key_pem: str, now: float | None = None) -> str:
    """An App Store Connect API token: a JWT signed ES256 with the team's ``.p8`` key.

    Raises:
        SettingsError: the private key is not a PEM EC P-256 key.
    """
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError):
        raise SettingsError("app_store_connect: private_key is not a PEM private key (the AuthKey_….p8 file)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise SettingsError("app_store_connect: private_key must be an EC P-256 key (the AuthKey_….p8 file)")
    issued = int(now if now is not None else time.time())
    header = {"alg": "ES256", "kid": key_id, "typ": "JWT"}
    claims = {"iss": issuer_id, "iat": issued, "exp": issued + TOKEN_LIFETIME_SECONDS, "aud": "appstoreconnect-v1"}
    signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}".encode()
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    # JWS wants the raw 64-byte r||s, not the DER signature cryptography returns.
    return f"{signing_input.decode()}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventRow:
    """One aggregated row of the Subscription Event report."""

    event_date: date
    event: str
    subscription_apple_id: str
    offer_type: str
    original_start_date: date | None
    country: str
    quantity: int
    app_apple_id: str | None = None


def _day(text: str) -> date:
    text = text.strip()
    if "/" in text:  # some exports write MM/DD/YYYY
        return datetime.strptime(text, "%m/%d/%Y").date()
    return date.fromisoformat(text)


def parse_event_report(data: bytes, name: str = "report") -> list[EventRow]:
    """Parse a Subscription Event report (gzip or plain TSV) by header name.

    Raises:
        ReportFormatError: not a TSV report, or a required column missing (named, with those found).
    """
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ReportFormatError(f"{name}: not UTF-8 text") from None
    reader = csv.reader(io.StringIO(text), delimiter="\t")
    header = [h.strip() for h in next(reader, [])]
    index: dict[str, int] = {}
    for key, labels in COLUMNS.items():
        for label in labels:
            if label in header:
                index[key] = header.index(label)
                break
    missing = [COLUMNS[k][0] for k in REQUIRED if k not in index]
    if missing:
        raise ReportFormatError(
            f"{name}: not a Subscription Event report v1_3: missing column(s) {', '.join(missing)}; "
            f"found: {', '.join(h for h in header if h) or 'nothing'}"
        )
    rows = []
    for line, values in enumerate(reader, 2):
        if not any(v.strip() for v in values):
            continue

        def cell(key: str, values: list[str] = values) -> str:
            i = index.get(key)
            return values[i].strip() if i is not None and i < len(values) else ""

        try:
            original = cell("original_start_date")
            rows.append(
                EventRow(
                    event_date=_day(cell("event_date")),
                    event=cell("event"),
                    subscription_apple_id=cell("subscription_apple_id"),
                    offer_type=cell("offer_type"),
                    original_start_date=_day(original) if original else None,
                    country=cell("country").upper(),
                    quantity=int(cell("quantity") or "0"),
                    app_apple_id=cell("app_apple_id") or None,
                )
            )
        except ValueError as exc:
            raise ReportFormatError(f"{name}: line {line}: {exc}") from None
    return rows


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    """The start of a report day, a calendar day of the report's zone, in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def cohort_key(day: date, subscription_apple_id: str, country: str) -> str:
    """The key of a trial cohort (and the prefix of its records' ids)."""
    return f"{day.isoformat()}/{subscription_apple_id}/{country or 'ZZ'}"


def trial_record(
    key: str, n: int, converted_on: date | None, tz: ZoneInfo = PACIFIC
) -> SourceCustomerRecord:
    """The n-th free-trial subscriber of a cohort, converted or not; days are read in ``tz``."""
    day_text, _, rest = key.partition("/")
    subscription_id, _, country = rest.partition("/")
    started = _midnight(date.fromisoformat(day_text), tz)
    external_id = f"{key}/{n}"
    return SourceCustomerRecord(
        external_id=external_id,
        name=f"App Store subscriber {external_id}",
        country=country if len(country) == 2 and country.isalpha() and country != "ZZ" else None,
        lead_created_at=started,
        free_trial_started_at=started,
        subscriptions=[
            SubscriptionFact(
                external_id=external_id,
                state="active" if converted_on else "trialing",
                trial_started_at=started,
                first_paid_at=_midnight(converted_on, tz) if converted_on else None,
            )
        ],
        custom={"app_store_subscription_apple_id": subscription_id},
    )


def day_records(
    rows: Iterable[EventRow], cohorts: dict[str, list[int]], app_apple_id: str | None = None,
    tz: ZoneInfo = PACIFIC,
) -> list[SourceCustomerRecord]:
    """Records for one day's rows, updating ``cohorts`` (key → [trials, converted]) in place.

    Trial rows add subscribers to their cohort; conversion rows convert the next unconverted ones of the
    cohort named by their ``Original Start Date`` (never more than the cohort's trials).
    """
    records: dict[str, SourceCustomerRecord] = {}
    rows = [r for r in rows if app_apple_id is None or r.app_apple_id in (None, app_apple_id)]
    for row in rows:
        if row.event in TRIAL_EVENTS and row.offer_type == FREE_TRIAL and row.quantity > 0:
            key = cohort_key(row.event_date, row.subscription_apple_id, row.country)
            counts = cohorts.setdefault(key, [0, 0])
            for n in range(counts[0] + 1, counts[0] + row.quantity + 1):
                records[f"{key}/{n}"] = trial_record(key, n, None, tz)
            counts[0] += row.quantity
    for row in rows:
        if row.event in CONVERSION_EVENTS and row.original_start_date and row.quantity > 0:
            key = cohort_key(row.original_start_date, row.subscription_apple_id, row.country)
            cohort = cohorts.get(key)
            if cohort is None:
                continue  # a trial we never saw (before the first report read): no record
            upto = min(cohort[0], cohort[1] + row.quantity)
            for n in range(cohort[1] + 1, upto + 1):
                records[f"{key}/{n}"] = trial_record(key, n, row.event_date, tz)
            cohort[1] = upto
    return list(records.values())


def prune_cohorts(cohorts: dict[str, list[int]], today: date) -> dict[str, list[int]]:
    """Drop cohorts older than ``COHORT_DAYS`` (their conversions are over): the cursor stays small."""
    oldest = (today - timedelta(days=COHORT_DAYS)).isoformat()
    return {k: v for k, v in cohorts.items() if k.split("/", 1)[0] >= oldest}


# --------------------------------------------------------------------------------------------------
# The connector
# --------------------------------------------------------------------------------------------------


class AppStoreConnectConnector(Connector):
    """Read daily Subscription Event reports from App Store Connect (Sales and Trends)."""

    kind = "app_store_connect"
    title = "App Store Connect"
    settings_schema = (
        Setting("issuer_id", required=True, help="Users and Access > Integrations > App Store Connect API: Issuer ID"),
        Setting("key_id", required=True, help="the API key's Key ID (needs the Sales, Finance or Admin role)"),
        Setting("private_key", secret=True, required=True, help="the AuthKey_<key id>.p8 PEM text"),
        Setting("vendor_number", required=True, help="Payments and Financial Reports: vendor number"),
        Setting("app_apple_id", help="only this app's subscriptions (App Apple ID); default all apps"),
        Setting("start_date", help="first report date on a first sync (YYYY-MM-DD); default 30 days ago"),
        Setting("report_time_zone", default=REPORT_TIME_ZONE,
                help="the agreement's report time zone (worldwide agreements: America/Los_Angeles)"),
        Setting("base_url", default=BASE_URL, help="API root (a mock: http://127.0.0.1:8080)"),
    )
    streams = (Stream("subscription_events", key="id", cursor_field="report_date", reader="read_events"),)

    _token: str | None = None
    _token_at: float = 0.0

    def client_options(self) -> dict[str, Any]:
        return {
            "headers": {"Accept": "application/a-gzip, application/json"},
            "secrets": [str(self.settings["private_key"])],
            "credentials_hint": "check the issuer_id, key_id and private_key settings (a key with the Sales role)",
        }

    def token(self) -> str:
        """A fresh token, re-signed well before its 20 minutes run out."""
        now = time.time()
        if self._token is None or now - self._token_at > TOKEN_LIFETIME_SECONDS - 300:
            self._token = make_token(
                str(self.settings["issuer_id"]), str(self.settings["key_id"]), str(self.settings["private_key"]), now
            )
            self._token_at = now
        return self._token

    def fetch_report(self, day: date) -> bytes | None:
        """The day's report bytes, or None on 404 (no report for that day)."""
        params = {
            "filter[frequency]": "DAILY",
            "filter[reportType]": "SUBSCRIPTION_EVENT",
            "filter[reportSubType]": "SUMMARY",
            "filter[version]": "1_3",
            "filter[vendorNumber]": str(self.settings["vendor_number"]),
            "filter[reportDate]": day.isoformat(),
        }
        try:
            response = self.client.request(
                "GET", REPORT_PATH, params=params, headers={"Authorization": f"Bearer {self.token()}"}
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return response.content

    def report_zone(self) -> ZoneInfo:
        """The zone the report days are calendar days of (``report_time_zone``)."""
        name = str(self.settings["report_time_zone"])
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"app_store_connect: report_time_zone={name!r} is not an IANA time zone") from None

    def first_day(self) -> date:
        start = self.settings.get("start_date")
        if start:
            try:
                return date.fromisoformat(str(start))
            except ValueError:
                raise SettingsError(f"app_store_connect: start_date={start!r} is not YYYY-MM-DD") from None
        return self.started_at.date() - timedelta(days=DEFAULT_BACKFILL_DAYS)

    def read_events(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """One batch per report day, from the day after the cursor's up to yesterday.

        A batch's cursor names the next day as its ``page_token`` while that day's report is surely
        published (a backfill stopped there resumes with it); the last batch of a run names none.

        Raises:
            PaginationLoopError: the API answered two days with the same report (it ignored the date
                asked for): reading on would count that day's trials again.
        """
        tz = self.report_zone()
        today = self.started_at.astimezone(tz).date()
        last = state.get("report_date")
        if state.get("page_token"):
            day = date.fromisoformat(state["page_token"])
        else:
            day = date.fromisoformat(last) + timedelta(days=1) if last else self.first_day()
        cohorts: dict[str, list[int]] = {k: list(v) for k, v in (state.get("cohorts") or {}).items()}
        app_id = str(self.settings["app_apple_id"]) if self.settings.get("app_apple_id") else None
        seen: dict[int, date] = {}  # the days read in this run, by a hash of their rows
        # Days whose report was missing, asked again until ``RECHECK_DAYS`` after them.
        pending = [d for d in (date.fromisoformat(p) for p in state.get("pending") or [])
                   if (today - d).days <= RECHECK_DAYS]

        def read_day(day: date, data: bytes) -> tuple[list[SourceCustomerRecord], int]:
            nonlocal cohorts
            rows = parse_event_report(data, f"report {day.isoformat()}")
            if rows:
                first = seen.setdefault(hash(tuple(rows)), day)
                if first != day:
                    raise PaginationLoopError(
                        f"{self.source_name}: GET {REPORT_PATH} answered {day.isoformat()} with the report of "
                        f"{first.isoformat()} a second time: refusing to count its trials again"
                    )
            records = day_records(rows, cohorts, app_id, tz)
            cohorts = prune_cohorts(cohorts, max(day, date.fromisoformat(last)) if last else day)
            return records, sum(r.quantity for r in rows)

        def cursor_at(reached: str | None, waiting: list[date]) -> dict[str, Any]:
            # A copy: the next day's rows update the counts while this batch may still be committing.
            cursor: dict[str, Any] = {"report_date": reached, "watermark": reached,
                                      "cohorts": {k: list(v) for k, v in cohorts.items()}}
            if waiting:
                cursor["pending"] = [d.isoformat() for d in sorted(waiting)]
            return cursor

        for missing in list(pending):
            data = self.fetch_report(missing)
            if data is None:
                continue
            pending.remove(missing)
            records, fetched = read_day(missing, data)
            yield Batch("subscription_events", records, cursor_at(last, pending), fetched)
        while day < today:
            data = self.fetch_report(day)
            if data is None and (today - day).days <= PUBLISH_DELAY_DAYS:
                if pending != [date.fromisoformat(p) for p in state.get("pending") or []]:
                    yield Batch("subscription_events", [], cursor_at(last, pending), 0)
                return  # not published yet: this day is read again next run
            if data is None:
                # Late: never taken as a day without events while it may still come.
                pending.append(day)
                records, fetched = [], 0
            else:
                records, fetched = read_day(day, data)
            last = day.isoformat()
            cursor = cursor_at(last, pending)
            following = day + timedelta(days=1)
            if (today - following).days > PUBLISH_DELAY_DAYS:
                cursor["page_token"] = following.isoformat()
            yield Batch("subscription_events", records, cursor, fetched)
            day = following
