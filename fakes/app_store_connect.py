"""A fake App Store Connect Sales and Trends API: one gzip TSV Subscription Event report (v1_3) per day.

``GET /v1/salesReports`` with Apple's filters (``filter[reportType]=SUBSCRIPTION_EVENT``,
``filter[reportSubType]=SUMMARY``, ``filter[frequency]=DAILY``, ``filter[version]=1_3``,
``filter[vendorNumber]``, ``filter[reportDate]``), authenticated by an ES256 JWT (``kid`` the key id,
``aud`` ``appstoreconnect-v1``, at most 20 minutes of validity) that the fake verifies with the key's
public half. A day with a report answers ``application/a-gzip``; any other day Apple's 404 ``NOT_FOUND``.
The report header is Apple's v1_3 column list (its Subscription Event report reference).

Its people are anonymous free-trial starts: ``page_size`` of them a day (a day is the API's page),
grouped per country into aggregated rows (``Quantity``) as Apple does, on the days before the two that
Apple may still be publishing.
"""

from __future__ import annotations

import base64
import gzip
import json
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from fakes.base import FakeApi

HEADER = (
    "Event Date", "Event", "App Name", "App Apple ID", "Subscription Name", "Subscription Apple ID",
    "Subscription Group ID", "Standard Subscription Duration", "Subscription Offer Type",
    "Subscription Offer Duration", "Marketing Opt-In", "Marketing Opt-In Duration", "Preserved Pricing",
    "Proceeds Reason", "Subscription Offer Name", "Promotional Offer ID", "Consecutive Paid Periods",
    "Original Start Date", "Device", "Client", "State", "Country", "Previous Subscription Name",
    "Previous Subscription Apple ID", "Days Before Canceling", "Cancellation Reason", "Days Canceled",
    "Quantity", "Paid Service Days Recovered",
)
ISSUER_ID = "57246542-96fe-1a63-e053-0824d011072a"
VENDOR_NUMBER = "85012345"
SUBSCRIPTION_APPLE_ID = "1600000001"
UNPUBLISHED_DAYS = 2  # the latest days, whose reports Apple may not have published yet
NOT_FOUND = {"errors": [{"status": "404", "code": "NOT_FOUND", "title": "The specified resource does not exist",
                         "detail": "There were no sales for the date specified."}]}


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class AppStoreConnectFake(FakeApi):
    kind = "app_store_connect"
    base_url = "https://api.appstoreconnect.test"
    main_path = "/v1/salesReports"
    main_stream = "subscription_events"
    # The key id plays the part of the key the suite swaps for a wrong one.
    api_key = "2X9R4HXF34"

    def __init__(self, n: int = 25, page_size: int = 10) -> None:
        super().__init__(n, page_size)
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        # Report days are Pacific Time days (worldwide agreements), so "today" is today in Cupertino.
        today = datetime.now(ZoneInfo("America/Los_Angeles")).date()
        days = -(-len(self.people) // page_size)
        self.first_day = today - timedelta(days=UNPUBLISHED_DAYS + days)
        self.reports: dict[date, list[dict[str, str]]] = {}
        self.expected: set[str] = set()
        counts: dict[tuple[date, str], int] = {}
        for i, person in enumerate(self.people):
            day = self.first_day + timedelta(days=i // page_size)
            counts[(day, person.country)] = counts.get((day, person.country), 0) + 1
            cohort_size = counts[(day, person.country)]
            self.expected.add(f"{day.isoformat()}/{SUBSCRIPTION_APPLE_ID}/{person.country}/{cohort_size}")
        for (day, country), quantity in sorted(counts.items()):
            self.reports.setdefault(day, []).append(self.trial_row(day, country, quantity))

    def id_prefix(self) -> str:
        return "asc_"

    def settings(self, api_key: str | None = None) -> dict[str, Any]:
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        return {"issuer_id": ISSUER_ID, "key_id": api_key or self.api_key, "private_key": pem,
                "vendor_number": VENDOR_NUMBER, "start_date": self.first_day.isoformat(), "base_url": self.base_url}

    def expected_ids(self) -> set[str]:
        return set(self.expected)

    @staticmethod
    def trial_row(day: date, country: str, quantity: int) -> dict[str, str]:
        row = dict.fromkeys(HEADER, "")
        row.update({
            "Event Date": day.isoformat(), "Event": "Start Introductory Offer", "App Name": "Acme Notes",
            "App Apple ID": "1500000000", "Subscription Name": "Pro Monthly",
            "Subscription Apple ID": SUBSCRIPTION_APPLE_ID, "Subscription Group ID": "21000000",
            "Standard Subscription Duration": "1 Month", "Subscription Offer Type": "Free Trial",
            "Subscription Offer Duration": "1 Week", "Consecutive Paid Periods": "0",
            "Original Start Date": day.isoformat(), "Device": "iPhone", "Country": country, "Quantity": str(quantity),
        })
        return row

    def authorised(self, request: httpx.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        parts = token.split(".")
        if scheme != "Bearer" or len(parts) != 3:
            return False
        try:
            header, claims, signature = json.loads(_unb64(parts[0])), json.loads(_unb64(parts[1])), _unb64(parts[2])
            der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
            self.private_key.public_key().verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
        except (ValueError, InvalidSignature):
            return False
        return (header.get("alg") == "ES256" and header.get("kid") == self.api_key and claims.get("iss") == ISSUER_ID
                and claims.get("aud") == "appstoreconnect-v1" and claims["exp"] - claims["iat"] <= 20 * 60)

    def unauthorised(self) -> httpx.Response:
        return httpx.Response(401, json={"errors": [{"status": "401", "code": "NOT_AUTHORIZED",
                                                     "title": "Authentication credentials are missing or invalid."}]})

    def report(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        expected = {"filter[reportType]": "SUBSCRIPTION_EVENT", "filter[reportSubType]": "SUMMARY",
                    "filter[frequency]": "DAILY", "filter[version]": "1_3", "filter[vendorNumber]": VENDOR_NUMBER}
        wrong = [name for name, value in expected.items() if params.get(name) != value]
        if wrong:
            return httpx.Response(400, json={"errors": [{"status": "400", "code": "PARAMETER_ERROR.INVALID",
                                                         "detail": f"invalid {', '.join(wrong)}"}]})
        # Loop mode: the date asked for is ignored and the first day's report comes back every time.
        day = self.first_day if self.loop_path == self.main_path else date.fromisoformat(params["filter[reportDate]"])
        rows = self.reports.get(day)
        if rows is None:
            return httpx.Response(404, json=NOT_FOUND)
        text = "\t".join(HEADER) + "\n" + "".join("\t".join(r[h] for h in HEADER) + "\n" for r in rows)
        return httpx.Response(200, content=gzip.compress(text.encode()), headers={"Content-Type": "application/a-gzip"})

    def routes(self) -> list[tuple[str, str, Any]]:
        return [("GET", r"/v1/salesReports", self.report)]
