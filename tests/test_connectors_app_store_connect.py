"""App Store Connect: the ES256 token, the Subscription Event report parser (by header name), free-trial
cohorts and their conversions, and the daily fetch against a respx fake serving gzip TSV."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from sqlalchemy import Engine, select

from connectors.app_store_connect import (
    RECHECK_DAYS,
    AppStoreConnectConnector,
    ReportFormatError,
    day_records,
    make_token,
    parse_event_report,
)
from connectors.http import CredentialsError
from jobs.sync import sync_source
from storage.schema import source_customers, subscriptions
from storage.sources import create_source

KEY = ec.generate_private_key(ec.SECP256R1())
PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption()).decode()
BASE = "https://api.appstoreconnect.test"

HEADER = ["Event Date", "Event", "App Name", "App Apple ID", "Subscription Name", "Subscription Apple ID",
          "Subscription Group ID", "Standard Subscription Duration", "Subscription Offer Type",
          "Subscription Offer Duration", "Marketing Opt-In", "Marketing Opt-In Duration", "Preserved Pricing",
          "Proceeds Reason", "Subscription Offer Name", "Promotional Offer ID", "Consecutive Paid Periods",
          "Original Start Date", "Device", "Client", "State", "Country", "Previous Subscription Name",
          "Previous Subscription Apple ID", "Days Before Canceling", "Cancellation Reason", "Days Canceled",
          "Quantity", "Paid Service Days Recovered"]


def row(day: str, event: str, offer_type: str, quantity: int, country: str = "US", original: str = "",
        sub_id: str = "1600000001") -> list[str]:
    values = dict.fromkeys(HEADER, "")
    values.update({"Event Date": day, "Event": event, "App Name": "Acme Notes", "App Apple ID": "1500000000",
                   "Subscription Name": "Pro Monthly", "Subscription Apple ID": sub_id,
                   "Subscription Group ID": "21000000", "Standard Subscription Duration": "1 Month",
                   "Subscription Offer Type": offer_type, "Subscription Offer Duration": "1 Week" if offer_type else "",
                   "Original Start Date": original, "Device": "iPhone", "Client": "App Store", "Country": country,
                   "Quantity": str(quantity)})
    return [values[h] for h in HEADER]


def tsv(rows: list[list[str]], header: list[str] = HEADER) -> bytes:
    return gzip.compress(("\t".join(header) + "\n" + "".join("\t".join(r) + "\n" for r in rows)).encode())


REPORTS = {
    "2025-03-01": [
        row("2025-03-01", "Start Introductory Offer", "Free Trial", 2),
        row("2025-03-01", "Start Introductory Offer", "Pay Up Front", 5),  # not a free trial
        row("2025-03-01", "Start Introductory Offer", "Free Trial", 1, "DE"),
        row("2025-03-01", "Subscribe", "", 4),
    ],
    # 2025-03-02: no report (404): no events that day
    "2025-03-03": [row("2025-03-03", "Start Introductory Offer", "Free Trial", 1)],
    "2025-03-08": [
        row("2025-03-08", "Paid Subscription from Introductory Offer", "Free Trial", 1, original="2025-03-01"),
        row("2025-03-08", "Paid Subscription from Introductory Offer", "Free Trial", 3, "FR", "2025-03-01"),
    ],
}


def test_token_is_a_valid_es256_jwt() -> None:
    token = make_token("57246542-96fe-1a63-e053-0824d011072a", "2X9R4HXF34", PEM, now=1_700_000_000)
    head, body, sig = token.split(".")
    pad = lambda s: s + "=" * (-len(s) % 4)
    assert json.loads(base64.urlsafe_b64decode(pad(head))) == {"alg": "ES256", "kid": "2X9R4HXF34", "typ": "JWT"}
    claims = json.loads(base64.urlsafe_b64decode(pad(body)))
    assert claims == {"iss": "57246542-96fe-1a63-e053-0824d011072a", "iat": 1_700_000_000, "exp": 1_700_001_200,
                      "aud": "appstoreconnect-v1"}
    raw = base64.urlsafe_b64decode(pad(sig))
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    KEY.public_key().verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))  # raises if wrong


def test_parser_accepts_both_offer_name_labels_and_fails_on_missing_columns() -> None:
    old = [h if h != "Subscription Offer Name" else "Promotional Offer Name" for h in HEADER]
    rows = parse_event_report(tsv([row("2025-03-01", "Start Introductory Price", "Free Trial", 2)], old))
    assert rows[0].event == "Start Introductory Price" and rows[0].quantity == 2
    assert rows[0].event_date == date(2025, 3, 1) and rows[0].original_start_date is None
    no_quantity = [h for h in HEADER if h != "Quantity"]
    with pytest.raises(ReportFormatError, match="missing column.*Quantity"):
        parse_event_report(tsv([], no_quantity))
    with pytest.raises(ReportFormatError, match="Event Date"):
        parse_event_report(b"<html>error</html>")


def test_cohorts_trials_and_conversions() -> None:
    cohorts: dict[str, list[int]] = {}
    first = day_records(parse_event_report(tsv(REPORTS["2025-03-01"])), cohorts)
    assert sorted(r.external_id for r in first) == ["2025-03-01/1600000001/DE/1", "2025-03-01/1600000001/US/1",
                                                    "2025-03-01/1600000001/US/2"]
    # Report days are Pacific Time days (worldwide agreements): 2025-03-01 begins at 08:00 UTC (PST).
    assert all(r.lead_created_at == r.free_trial_started_at == datetime(2025, 3, 1, 8, tzinfo=UTC) for r in first)
    assert first[0].subscriptions[0].state == "trialing"
    converted = day_records(parse_event_report(tsv(REPORTS["2025-03-08"])), cohorts)
    # One US conversion converts the first US trial; the FR cohort was never seen: nothing.
    assert [r.external_id for r in converted] == ["2025-03-01/1600000001/US/1"]
    fact = converted[0].subscriptions[0]
    assert fact.state == "active" and fact.first_paid_at == datetime(2025, 3, 8, 8, tzinfo=UTC)
    assert cohorts["2025-03-01/1600000001/US"] == [2, 1]
    # More conversions than trials never convert records that do not exist.
    again = day_records(parse_event_report(tsv([row("2025-03-09", "Paid Subscription from Introductory Offer",
                                                    "Free Trial", 5, original="2025-03-01")])), cohorts)
    assert [r.external_id for r in again] == ["2025-03-01/1600000001/US/2"] and cohorts["2025-03-01/1600000001/US"] == [
        2,
        2,
    ]


class AppleFake:
    def __init__(self) -> None:
        self.dates: list[str] = []
        self.auth: list[str] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        assert params["filter[reportType]"] == "SUBSCRIPTION_EVENT" and params["filter[version]"] == "1_3"
        assert params["filter[vendorNumber]"] == "85012345" and params["filter[frequency]"] == "DAILY"
        self.auth.append(request.headers["Authorization"])
        day = params["filter[reportDate]"]
        self.dates.append(day)
        if day not in REPORTS:
            return httpx.Response(404, json={"errors": [{"status": "404", "code": "NOT_FOUND",
                                                         "title": "The specified resource does not exist",
                                                         "detail": "There were no sales for the date specified."}]})
        return httpx.Response(
            200,
            content=tsv(REPORTS[day]),
            headers={"Content-Type": "application/a-gzip", "X-Rate-Limit": "user-hour-lim:3600;user-hour-rem:3599;"},
        )


def settings(**extra: Any) -> dict[str, Any]:
    return {"issuer_id": "57246542-96fe-1a63-e053-0824d011072a", "key_id": "2X9R4HXF34", "private_key": PEM,
            "vendor_number": "85012345", "start_date": "2025-03-01", "base_url": BASE, **extra}


def now_fn() -> datetime:
    return datetime(2025, 3, 10, 9, tzinfo=UTC)


def test_daily_fetch_into_storage_and_resume(db_engine: Engine) -> None:
    fake = AppleFake()
    with db_engine.begin() as conn:
        create_source(conn, "ios", "app_store_connect", settings())
    with respx.mock as router:
        router.get(f"{BASE}/v1/salesReports").mock(side_effect=fake.handler)
        # 2025-03-09 is recent and 404: not published yet, so the run stops before it.
        first = sync_source(db_engine, "ios", sleep_fn=lambda s: None, now=now_fn)
        assert fake.dates == [f"2025-03-0{d}" for d in range(1, 10)]
        assert first.totals["created"] == 4
        fake.dates.clear()
        second = sync_source(db_engine, "ios", sleep_fn=lambda s: None, now=now_fn)
    # The older days that answered 404 are asked again (a report may be published late), then it resumes
    # after the last report read.
    assert fake.dates == ["2025-03-02", "2025-03-04", "2025-03-05", "2025-03-06", "2025-03-07", "2025-03-09"]
    assert second.totals["created"] == 0 and second.totals["updated"] == 0
    assert all(a.startswith("Bearer ey") for a in fake.auth)
    with db_engine.connect() as conn:
        ids = sorted(conn.execute(select(source_customers.c.external_id)).scalars())
        paid = (
            conn.execute(select(subscriptions.c.external_id).where(subscriptions.c.first_paid_at.is_not(None)))
            .scalars()
            .all()
        )
    assert ids == ["2025-03-01/1600000001/DE/1", "2025-03-01/1600000001/US/1", "2025-03-01/1600000001/US/2",
                   "2025-03-03/1600000001/US/1"]
    assert paid == ["2025-03-01/1600000001/US/1"]


def test_401_fails_fast_and_429_is_waited_out() -> None:
    slept: list[float] = []
    with respx.mock as router:
        route = router.get(f"{BASE}/v1/salesReports")
        route.side_effect = [httpx.Response(401, json={"errors": [{"status": "401", "code": "NOT_AUTHORIZED"}]})]
        with pytest.raises(CredentialsError, match="private_key") as info:
            list(
                AppStoreConnectConnector(settings(), now=now_fn, sleep_fn=slept.append).read(
                    "subscription_events", None, False
                )
            )
        assert PEM not in str(info.value) and route.call_count == 1 and slept == []
        fake = AppleFake()
        route.side_effect = [httpx.Response(429, headers={"Retry-After": "3"},
                                            json={"errors": [{"code": "RATE_LIMIT_EXCEEDED"}]}), *[fake.handler] * 20]
        batches = list(AppStoreConnectConnector(settings(), now=now_fn, sleep_fn=slept.append).read(
            "subscription_events", None, False))
    assert slept == [3.0] and batches[-1].cursor["report_date"] == "2025-03-08"


def test_a_report_published_late_is_read_and_never_skipped(db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apple's 404 ("There were no sales for the date specified") also answers a day not published yet,
    and reports can land late: an older day that 404s is asked again by the next runs, and its trials
    count once it comes (sales-and-trends-reports-availability: daily reports "available the following
    day", by 8 AM Pacific Time)."""
    fake = AppleFake()
    late = "2025-03-05"
    with db_engine.begin() as conn:
        create_source(conn, "ios", "app_store_connect", settings())
    with respx.mock as router:
        router.get(f"{BASE}/v1/salesReports").mock(side_effect=fake.handler)
        sync_source(db_engine, "ios", sleep_fn=lambda s: None, now=now_fn)
        monkeypatch.setitem(REPORTS, late, [row(late, "Start Introductory Offer", "Free Trial", 2, country="JP")])
        fake.dates.clear()
        later = sync_source(db_engine, "ios", sleep_fn=lambda s: None, now=lambda: now_fn() + timedelta(days=1))
        assert late in fake.dates and later.totals["created"] == 2
        fake.dates.clear()
        # Read once: the next run no longer asks for it.
        sync_source(db_engine, "ios", sleep_fn=lambda s: None, now=lambda: now_fn() + timedelta(days=2))
        assert late not in fake.dates
    with db_engine.connect() as conn:
        ids = set(conn.execute(select(source_customers.c.external_id)).scalars())
    assert {"2025-03-05/1600000001/JP/1", "2025-03-05/1600000001/JP/2"} <= ids


def test_a_missing_day_is_asked_again_for_a_bounded_time() -> None:
    """A day whose report answers 404 stays in the cursor's ``pending`` days (the cursor never forgets a
    day not delivered) and is asked again by each run, but only for ``RECHECK_DAYS``: Apple's 404 also
    means "There were no sales for the date specified", so a day never published is given up in time."""
    fake = AppleFake()
    connector = AppStoreConnectConnector(settings(), sleep_fn=lambda s: None, now=now_fn)
    with respx.mock as router:
        router.get(f"{BASE}/v1/salesReports").mock(side_effect=fake.handler)
        cursor = list(connector.read("subscription_events", None, False))[-1].cursor
        assert cursor["pending"] == ["2025-03-02", "2025-03-04", "2025-03-05", "2025-03-06", "2025-03-07"]
        fake.dates.clear()
        much_later = AppStoreConnectConnector(
            settings(), sleep_fn=lambda s: None, now=lambda: now_fn() + timedelta(days=RECHECK_DAYS - 7))
        after = list(much_later.read("subscription_events", cursor, False))[-1].cursor
    # 2025-03-02 is now more than RECHECK_DAYS old: given up; the later ones are still asked for.
    assert "2025-03-02" not in fake.dates and "2025-03-04" in fake.dates
    assert after["pending"][0] > "2025-03-02"


def test_report_days_are_pacific_time_days() -> None:
    """At 05:00 UTC on 2025-03-10 it is still 2025-03-09 in Cupertino: that day is not over and is not
    asked for, and 2025-03-07 is recent enough that its 404 means "not yet" ("Reports for worldwide
    agreements use PST/PDT", Sales and Trends reports help)."""
    fake = AppleFake()
    early = AppStoreConnectConnector(settings(), sleep_fn=lambda s: None,
                                     now=lambda: datetime(2025, 3, 10, 5, tzinfo=UTC))
    with respx.mock as router:
        router.get(f"{BASE}/v1/salesReports").mock(side_effect=fake.handler)
        list(early.read("subscription_events", None, False))
    assert "2025-03-09" not in fake.dates and fake.dates[-1] == "2025-03-07"
