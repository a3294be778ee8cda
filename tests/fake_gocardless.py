"""A fake GoCardless API on respx that really pages (``limit`` / ``after``) with real field names.

Lists run newest first like the real API; ``after`` is the id of the last item of the previous page
and ``meta.cursors.after`` is null on the last page. Detail routes answer ``{"<resource>": {...}}``.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import respx

BASE = "https://api.gocardless.com"
TOKEN = "live_gc_test_token_0123456789"
RESOURCES = ("customers", "mandates", "subscriptions", "payments", "events")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class FakeGoCardless:
    """In-memory GoCardless data plus the respx routes that serve it."""

    def __init__(self, base: str = BASE, token: str = TOKEN) -> None:
        self.base = base
        self.token = token
        self.data: dict[str, list[dict[str, Any]]] = {r: [] for r in RESOURCES}
        self.injected: dict[str, list[httpx.Response]] = {}  # path → responses served before the real one
        self.requests: list[httpx.Request] = []
        self.repeat_token = False  # answer every page with the same `after` cursor (a server bug)

    # -- data -------------------------------------------------------------------------------------

    def add_customer(
        self,
        n: int,
        *,
        payments: list[tuple[str, int, str]] = (),  # (status, amount, charge_date)
        subscription_status: str | None = None,
        created: datetime | None = None,
    ) -> str:
        created = created or datetime(2025, 1, 1, 9, tzinfo=UTC) + timedelta(hours=n)
        cid = f"CU{n:012d}"
        self.data["customers"].append(
            {
                "id": cid,
                "created_at": iso(created),
                "email": f"payer{n}@example.com",
                "given_name": "Frank",
                "family_name": f"Osborne{n}",
                "company_name": f"Hamilton Trading {n} Ltd." if n % 3 == 0 else None,
                "address_line1": "221B Baker Street",
                "city": "London",
                "region": "Greater London",
                "postal_code": "NW1 6XE",
                "country_code": "GB",
                "language": "en",
                "phone_number": None,
                "metadata": {"crm_id": f"crm-{n}"} if n % 2 == 0 else {},
            }
        )
        if subscription_status is None and not payments:
            return cid
        mid = f"MD{n:012d}"
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
            sid = f"SB{n:012d}"
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
                    "id": f"PM{n:010d}{k:02d}",
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

    def _auth_error(self, request: httpx.Request) -> httpx.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
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
        if request.headers.get("GoCardless-Version") != "2015-07-06":
            return httpx.Response(400, json={"error": {"message": "GoCardless-Version header missing"}})
        return None

    def _injected(self, request: httpx.Request) -> httpx.Response | None:
        queue = self.injected.get(request.url.path)
        return queue.pop(0) if queue else None

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
        self.requests.append(request)
        resource = request.url.path.strip("/")
        failure = self._auth_error(request) or self._injected(request)
        if failure is not None:
            return failure
        params = request.url.params
        limit = int(params.get("limit", 50))
        if limit > 500:
            return httpx.Response(422, json={"error": {"message": "limit must be at most 500"}})
        items = sorted(
            (i for i in self.data[resource] if self._matches(resource, i, params)),
            key=lambda i: (i["created_at"], i["id"]),
            reverse=True,
        )
        start = 0
        after = params.get("after")
        if after:
            ids = [i["id"] for i in items]
            start = ids.index(after) + 1 if after in ids else len(items)
        chunk = items[start : start + limit]
        more = start + limit < len(items)
        after_token = chunk[-1]["id"] if more and chunk else None
        if self.repeat_token and chunk:
            after_token = items[min(limit, len(items)) - 1]["id"]
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
        self.requests.append(request)
        failure = self._auth_error(request) or self._injected(request)
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

    def install(self, router: respx.Router | Any = respx) -> None:
        names = "|".join(RESOURCES)
        router.get(url__regex=rf"^{re.escape(self.base)}/({names})(\?.*)?$").mock(
            side_effect=self.list_handler
        )
        router.get(url__regex=rf"^{re.escape(self.base)}/({names})/[A-Z0-9]+$").mock(
            side_effect=self.detail_handler
        )


def populated(n: int = 30) -> FakeGoCardless:
    """``n`` customers: every third has no payment, the rest a subscription with collected payments."""
    fake = FakeGoCardless()
    for i in range(n):
        if i % 3 == 1:
            fake.add_customer(i)  # a lead: no mandate, no payment
        else:
            day = (date(2025, 2, 1) + timedelta(days=i)).isoformat()
            fake.add_customer(i, subscription_status="active", payments=[("paid_out", 1500, day)])
    return fake
