"""A fake Paddle Billing API: customers paged by ``meta.pagination.next``, subscriptions by customer ids."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from fakes.base import FakeApi, FakePerson, FakeSubscription, window


def iso(epoch: int | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


class PaddleFake(FakeApi):
    kind = "paddle"
    base_url = "https://api.paddle.test"
    main_path = "/customers"
    main_stream = "customers"

    def id_prefix(self) -> str:
        return "ctm_"

    def authorised(self, request: httpx.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def unauthorised(self) -> httpx.Response:
        detail = "Authentication header included, but incorrectly formatted."
        return httpx.Response(401, json={"error": {"type": "request_error", "code": "authentication_malformed",
                                                   "detail": detail}})

    def customer(self, p: FakePerson) -> dict[str, Any]:
        return {"id": p.id, "name": f"{p.first_name} {p.last_name}", "email": p.email, "status": "active",
                "created_at": iso(p.created), "updated_at": iso(p.updated), "custom_data": None}

    def subscription(self, p: FakePerson, s: FakeSubscription) -> dict[str, Any]:
        paid = min((i.paid_at for i in p.invoices if i.subscription == s.id and i.amount_paid > 0), default=None)
        trial = {"starts_at": iso(s.trial_start), "ends_at": iso(s.trial_end)} if s.trial_start else None
        return {"id": s.id.replace("sub_", "sub_01"), "customer_id": p.id, "status": s.status,
                "created_at": iso(s.created), "first_billed_at": iso(paid), "canceled_at": iso(s.canceled_at),
                "items": [{"status": "active", "quantity": 1, "trial_dates": trial}]}

    def page(self, request: httpx.Request, items: list[dict[str, Any]], path: str) -> httpx.Response:
        params = dict(request.url.params)
        after = params.pop("after", None)
        start = 0
        if after is not None and self.loop_path != path:
            start = next(i for i, x in enumerate(items) if x["id"] == after) + 1
        data, more = window(items, start, int(params.get("per_page", 50)))
        nxt = f"{self.base_url}{path}?{urlencode({**params, 'after': data[-1]['id']})}" if more and data else None
        pagination = {"per_page": int(params.get("per_page", 50)), "next": nxt, "has_more": more,
                      "estimated_total": len(items)}
        return httpx.Response(200, json={"data": data, "meta": {"request_id": "r1", "pagination": pagination}})

    def list_customers(self, request: httpx.Request) -> httpx.Response:
        gt = request.url.params.get("updated_at[GT]")
        people = sorted(self.people, key=lambda p: (p.updated, p.id))
        items = [self.customer(p) for p in people if gt is None or iso(p.updated) > gt]  # type: ignore[operator]
        return self.page(request, items, "/customers")

    def list_subscriptions(self, request: httpx.Request) -> httpx.Response:
        wanted = set((request.url.params.get("customer_id") or "").split(","))
        items = [self.subscription(p, s) for p in self.people if p.id in wanted for s in p.subscriptions]
        return self.page(request, items, "/subscriptions")

    def routes(self) -> list[tuple[str, str, Any]]:
        return [("GET", r"/customers", self.list_customers), ("GET", r"/subscriptions", self.list_subscriptions)]
