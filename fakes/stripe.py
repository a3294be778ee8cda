"""A fake Stripe API: real paging (``starting_after`` while ``has_more``), filters and field names, in memory."""

from __future__ import annotations

from typing import Any

import httpx

from fakes.base import FakeApi, FakeInvoice, FakePerson, FakeSubscription, window


class StripeFake(FakeApi):
    kind = "stripe"
    base_url = "https://api.stripe.test"
    main_path = "/v1/customers"
    main_stream = "customers"

    def __init__(self, n: int = 25, page_size: int = 10) -> None:
        super().__init__(n, page_size)
        self.deleted_ids: set[str] = set()

    def settings(self, api_key: str | None = None) -> dict[str, Any]:
        return {**super().settings(api_key), "concurrency": 1}

    def authorised(self, request: httpx.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def unauthorised(self) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "Invalid API Key provided: sk_test_****4242",
                                                   "type": "invalid_request_error"}})

    # --- shapes
    def customer(self, p: FakePerson) -> dict[str, Any]:
        return {
            "id": p.id, "object": "customer", "address": {"country": p.country, "city": None, "line1": None,
                                                          "postal_code": None, "state": None},
            "balance": 0, "created": p.created, "currency": "usd", "delinquent": False, "description": None,
            "email": p.email, "invoice_prefix": p.id[-8:].upper(), "livemode": False,
            "metadata": {"company": p.company}, "name": f"{p.first_name} {p.last_name}", "phone": None,
            "preferred_locales": [], "tax_exempt": "none", "test_clock": None,
        }

    def subscription(self, p: FakePerson, s: FakeSubscription) -> dict[str, Any]:
        return {
            "id": s.id, "object": "subscription", "customer": p.id, "status": s.status, "created": s.created,
            "start_date": s.created, "trial_start": s.trial_start, "trial_end": s.trial_end,
            "canceled_at": s.canceled_at, "ended_at": s.canceled_at, "cancel_at_period_end": False,
            "items": {"object": "list", "data": [{"id": f"si_{s.id}", "object": "subscription_item", "price": {
                "id": "price_1", "object": "price", "unit_amount": s.amount, "currency": "usd",
                "recurring": {"interval": "month", "interval_count": 1, "trial_period_days": 14}}}]},
            "livemode": False, "metadata": {},
        }

    def invoice(self, p: FakePerson, inv: FakeInvoice) -> dict[str, Any]:
        return {
            "id": inv.id, "object": "invoice", "customer": p.id, "subscription": inv.subscription,
            "amount_due": inv.amount_paid, "amount_paid": inv.amount_paid, "amount_remaining": 0,
            "billing_reason": inv.billing_reason, "currency": "usd", "paid": True, "status": "paid",
            "created": inv.paid_at, "status_transitions": {"finalized_at": inv.paid_at, "paid_at": inv.paid_at,
                                                           "marked_uncollectible_at": None, "voided_at": None},
        }

    # --- paging
    def page(self, request: httpx.Request, items: list[dict[str, Any]], url: str, path: str) -> httpx.Response:
        params = request.url.params
        limit = int(params.get("limit", 10))
        after = params.get("starting_after")
        start = 0
        if after and self.loop_path != path:
            start = next(i for i, item in enumerate(items) if item["id"] == after) + 1
        data, more = window(items, start, limit)
        return httpx.Response(200, json={"object": "list", "url": url, "has_more": more, "data": data})

    def person(self, customer_id: str) -> FakePerson | None:
        return next((p for p in self.people if p.id == customer_id), None)

    def list_customers(self, request: httpx.Request) -> httpx.Response:
        gte = request.url.params.get("created[gte]")
        people = sorted(self.people, key=lambda p: (p.created, p.id), reverse=True)  # newest first
        items = [self.customer(p) for p in people if gte is None or p.created >= int(gte)]
        return self.page(request, items, "/v1/customers", "/v1/customers")

    def delete_customer(self, customer_id: str, at: int) -> None:
        """Delete a customer as ``DELETE /v1/customers/{id}`` does: a ``customer.deleted`` event, and the
        customer reads back as ``{"id", "object": "customer", "deleted": true}``, gone from the list."""
        person = self.person(customer_id)
        assert person is not None
        self.people.remove(person)
        self.deleted_ids.add(customer_id)
        self.add_event("customer.deleted", self.customer(person), at)

    def get_customer(self, request: httpx.Request) -> httpx.Response:
        customer_id = request.url.path.rsplit("/", 1)[1]
        if customer_id in self.deleted_ids:
            return httpx.Response(200, json={"id": customer_id, "object": "customer", "deleted": True})
        person = self.person(customer_id)
        if person is None:
            return httpx.Response(404, json={"error": {"code": "resource_missing", "message": "No such customer"}})
        return httpx.Response(200, json=self.customer(person))

    def list_subscriptions(self, request: httpx.Request) -> httpx.Response:
        person = self.person(request.url.params["customer"])
        subs = person.subscriptions if person else []
        if request.url.params.get("status") != "all":  # Stripe's default hides canceled subscriptions
            subs = [s for s in subs if s.status != "canceled"]
        items = [self.subscription(person, s) for s in sorted(subs, key=lambda s: s.created, reverse=True)]  # type: ignore[arg-type]
        return self.page(request, items, "/v1/subscriptions", "/v1/subscriptions")

    def list_invoices(self, request: httpx.Request) -> httpx.Response:
        person = self.person(request.url.params["customer"])
        invoices = sorted(person.invoices if person else [], key=lambda i: i.paid_at, reverse=True)
        items = [self.invoice(person, i) for i in invoices]  # type: ignore[arg-type]
        return self.page(request, items, "/v1/invoices", "/v1/invoices")

    def list_events(self, request: httpx.Request) -> httpx.Response:
        gte = int(request.url.params.get("created[gte]", 0))
        types = set(request.url.params.get_list("types[]"))
        events = [e for e in self.events if e["created"] >= gte and (not types or e["type"] in types)]
        events.sort(key=lambda e: (e["created"], e["id"]), reverse=True)
        return self.page(request, events, "/v1/events", "/v1/events")

    def add_event(self, event_type: str, obj: dict[str, Any], created: int) -> None:
        self.events.append({"id": f"evt_{len(self.events):06d}", "object": "event", "type": event_type,
                            "created": created, "data": {"object": obj}, "livemode": False,
                            "pending_webhooks": 0, "api_version": "2024-06-20"})

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", r"/v1/customers", self.list_customers),
            ("GET", r"/v1/customers/[^/?]+", self.get_customer),
            ("GET", r"/v1/subscriptions", self.list_subscriptions),
            ("GET", r"/v1/invoices", self.list_invoices),
            ("GET", r"/v1/events", self.list_events),
        ]
