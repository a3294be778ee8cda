"""A fake GoCardless API on respx that really pages (``limit`` / ``after``) with real field names.

Lists run newest first like the real API; ``after`` is the id of the last item of the previous page
and ``meta.cursors.after`` is null on the last page. Detail routes answer ``{"<resource>": {...}}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from fakes.base import FakeApi, FakePerson

BASE = "https://api.gocardless.com"
TOKEN = "live_gc_test_token_0123456789"
RESOURCES = ("customers", "mandates", "subscriptions", "payments", "events")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class GoCardlessFake(FakeApi):
    """In-memory GoCardless data plus the routes that serve it.

    Built from the suite's shared population (``FakePerson``): leads get a one-off payment (a
    customer with a payment but no subscription), trialing and abandoned-trial people get a
    subscription without payments (GoCardless has no trials: they are the payment-less customers a
    non-full sync skips), converted and direct payers get paid-out payments.
    """

    kind = "gocardless"
    base_url = BASE
    main_path = "/customers"
    main_stream = "customers"
    api_key = TOKEN

    def __init__(self, n: int = 25, page_size: int = 10) -> None:
        super().__init__(n, page_size)
        self.data: dict[str, list[dict[str, Any]]] = {r: [] for r in RESOURCES}
        self.requests: list[httpx.Request] = []
        self._listings: dict[tuple[Any, ...], tuple[list[dict[str, Any]], dict[str, int]]] = {}
        for person in self.people:
            self.add_person(person)

    def id_prefix(self) -> str:
        return "CU"

    def settings(self, api_key: str | None = None) -> dict[str, Any]:
        return {
            "access_token": api_key or self.api_key,
            "base_url": self.base_url,
            "page_size": self.page_size,
        }

    def expected_ids(self) -> set[str]:
        """A sync that is not a full refresh imports only customers with a payment (the GoCardless rule)."""
        mandates = {m["id"]: m["links"]["customer"] for m in self.data["mandates"]}
        return {mandates[p["links"]["mandate"]] for p in self.data["payments"]}

    def all_ids(self) -> set[str]:
        return {c["id"] for c in self.data["customers"]}

    def add_person(self, p: FakePerson) -> None:
        created = datetime.fromtimestamp(p.created, tz=UTC)
        if not p.subscriptions:
            self.add_customer(
                0,
                created=created,
                cid=p.id,
                person=p,
                payments=[("pending_submission", 4900, (created + timedelta(days=3)).date().isoformat())],
            )
            return
        sub = p.subscriptions[0]
        status = {"trialing": "active", "active": "active", "canceled": "cancelled", "past_due": "active"}[
            sub.status
        ]
        payments = [
            ("paid_out", inv.amount_paid, datetime.fromtimestamp(inv.paid_at, tz=UTC).date().isoformat())
            for inv in p.invoices
            if inv.amount_paid > 0
        ]
        if sub.status == "past_due":
            payments.append(("failed", sub.amount, (created + timedelta(days=40)).date().isoformat()))
        self.add_customer(
            0, created=created, cid=p.id, person=p, payments=payments, subscription_status=status
        )

    # -- data -------------------------------------------------------------------------------------

    def add_customer(
        self,
        n: int,
        *,
        payments: Sequence[tuple[str, int, str]] = (),  # (status, amount, charge_date)
        subscription_status: str | None = None,
        created: datetime | None = None,
        cid: str | None = None,
        person: FakePerson | None = None,
    ) -> str:
        created = created or datetime(2025, 1, 1, 9, tzinfo=UTC) + timedelta(hours=n)
        cid = cid or f"CU{n:012d}"
        n = n or len(self.data["customers"])
        self.data["customers"].append(
            {
                "id": cid,
                "created_at": iso(created),
                "email": person.email if person else f"payer{n}@example.com",
                "given_name": person.first_name if person else "Frank",
                "family_name": person.last_name if person else f"Osborne{n}",
                "company_name": (person.company if person else f"Hamilton Trading {n} Ltd.")
                if n % 3 == 0
                else None,
                "address_line1": "221B Baker Street",
                "city": "London",
                "region": "Greater London",
                "postal_code": "NW1 6XE",
                "country_code": person.country if person else "GB",
                "language": "en",
                "phone_number": None,
                "metadata": {"crm_id": f"crm-{n}"} if n % 2 == 0 else {},
            }
        )
        if subscription_status is None and not payments:
            return cid
        suffix = cid[2:]
        mid = f"MD{suffix}"
        self.data["mandates"].append(
            {
                "id": mid,
                "created_at": iso(created + timedelta(minutes=5)),
                "reference": f"REF-{n}",
                "status": "active",
                "scheme": "bacs",
                "next_possible_charge_date": "2025-02-01",
                "metadata": {},
                "links": {"customer_bank_account": f"BA{n:012d}", "creditor": "CR123", "customer": cid},
            }
        )
        sid = None
        if subscription_status is not None:
            sid = f"SB{suffix}"
            self.data["subscriptions"].append(
                {
                    "id": sid,
                    "created_at": iso(created + timedelta(minutes=10)),
                    "amount": 1500,
                    "currency": "GBP",
                    "status": subscription_status,
                    "name": "Monthly plan",
                    "start_date": "2025-02-01",
                    "end_date": "2025-12-01" if subscription_status in ("cancelled", "finished") else None,
                    "interval": 1,
                    "interval_unit": "monthly",
                    "day_of_month": 1,
                    "metadata": {},
                    "upcoming_payments": [],
                    "links": {"mandate": mid},
                }
            )
        for k, (status, amount, charge_date) in enumerate(payments):
            self.data["payments"].append(
                {
                    "id": f"PM{suffix}{k:02d}",
                    "created_at": iso(created + timedelta(minutes=20 + k)),
                    "charge_date": charge_date,
                    "amount": amount,
                    "amount_refunded": 0,
                    "currency": "GBP",
                    "description": "Monthly plan",
                    "reference": f"PAY-{n}-{k}",
                    "status": status,
                    "metadata": {},
                    "links": {"mandate": mid, "creditor": "CR123", **({"subscription": sid} if sid else {})},
                }
            )
        return cid

    def add_event(self, created: datetime, resource_type: str, action: str, links: dict[str, str]) -> None:
        self.data["events"].append(
            {
                "id": f"EV{len(self.data['events']):012d}",
                "created_at": iso(created),
                "resource_type": resource_type,
                "action": action,
                "links": links,
                "details": {"origin": "gocardless", "cause": f"{resource_type}_{action}", "description": "…"},
                "metadata": {},
            }
        )

    def find(self, resource: str, item_id: str) -> dict[str, Any] | None:
        return next((i for i in self.data[resource] if i["id"] == item_id), None)

    # -- serving ----------------------------------------------------------------------------------

    def authorised(self, request: httpx.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def unauthorised(self) -> httpx.Response:
        return httpx.Response(
            401,
            json={
                "error": {
                    "message": "Invalid API token",
                    "type": "invalid_api_usage",
                    "code": 401,
                    "request_id": "deadbeef",
                    "errors": [{"reason": "invalid_api_token", "message": "Invalid API token"}],
                }
            },
        )

    def _version_error(self, request: httpx.Request) -> httpx.Response | None:
        self.requests.append(request)
        if request.headers.get("GoCardless-Version") != "2015-07-06":
            return httpx.Response(400, json={"error": {"message": "GoCardless-Version header missing"}})
        return None

    def _matches(self, resource: str, item: dict[str, Any], params: httpx.QueryParams) -> bool:
        if "created_at[gt]" in params and not item["created_at"] > params["created_at[gt]"]:
            return False
        customer = params.get("customer")
        if customer:
            if resource == "mandates":
                return item["links"]["customer"] == customer
            mandate = self.find("mandates", item["links"].get("mandate", ""))
            return bool(mandate and mandate["links"]["customer"] == customer)
        return True

    def list_handler(self, request: httpx.Request) -> httpx.Response:
        resource = request.url.path.strip("/")
        failure = self._version_error(request)
        if failure is not None:
            return failure
        params = request.url.params
        limit = int(params.get("limit", 50))
        if limit > 500:
            return httpx.Response(422, json={"error": {"message": "limit must be at most 500"}})
        # The same listing is paged many times: filter, sort and index it once per data change.
        key = (resource, params.get("customer"), params.get("created_at[gt]"), len(self.data[resource]))
        cached = self._listings.get(key)
        if cached is None:
            ordered = sorted(
                (i for i in self.data[resource] if self._matches(resource, i, params)),
                key=lambda i: (i["created_at"], i["id"]),
                reverse=True,
            )
            cached = self._listings[key] = (ordered, {i["id"]: n for n, i in enumerate(ordered)})
        items, position = cached
        start = 0
        after = None if self.loop_path == request.url.path else params.get("after")
        if after:
            start = position[after] + 1 if after in position else len(items)
        chunk = items[start : start + limit]
        more = start + limit < len(items)
        after_token = chunk[-1]["id"] if more and chunk else None
        return httpx.Response(
            200,
            json={
                resource: chunk,
                "meta": {
                    "cursors": {"before": chunk[0]["id"] if start and chunk else None, "after": after_token},
                    "limit": limit,
                },
            },
        )

    def detail_handler(self, request: httpx.Request) -> httpx.Response:
        failure = self._version_error(request)
        if failure is not None:
            return failure
        _, resource, item_id = request.url.path.split("/")
        item = self.find(resource, item_id)
        if item is None:
            return httpx.Response(
                404,
                json={"error": {"message": "Resource not found", "type": "invalid_api_usage", "code": 404}},
            )
        return httpx.Response(200, json={resource: item})

    def routes(self) -> list[tuple[str, str, Any]]:
        names = "|".join(RESOURCES)
        return [
            ("GET", rf"/({names})", self.list_handler),
            ("GET", rf"/({names})/[A-Za-z0-9_]+", self.detail_handler),
        ]


def populated(n: int = 30) -> GoCardlessFake:
    """``n`` customers: every third has no payment, the rest a subscription with collected payments."""
    fake = GoCardlessFake(n=0)
    for i in range(n):
        if i % 3 == 1:
            fake.add_customer(i)  # a lead: no mandate, no payment
        else:
            day = (date(2025, 2, 1) + timedelta(days=i)).isoformat()
            fake.add_customer(i, subscription_status="active", payments=[("paid_out", 1500, day)])
    return fake
