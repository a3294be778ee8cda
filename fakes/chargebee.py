"""A fake Chargebee API (v2): real paging (``offset`` = ``next_offset``), ``[in]`` filters and field names."""

from __future__ import annotations

import json
from typing import Any

import httpx

from fakes.base import FakeApi, FakeInvoice, FakePerson, FakeSubscription, window

CB_STATUS = {"trialing": "in_trial", "active": "active", "canceled": "cancelled", "past_due": "active"}


class ChargebeeFake(FakeApi):
    kind = "chargebee"
    base_url = "https://acme.chargebee.test/api/v2"
    main_path = "/api/v2/customers"
    main_stream = "customers"

    def __init__(self, n: int = 25, page_size: int = 10) -> None:
        super().__init__(n, page_size)
        self.deleted_ids: set[str] = set()

    def id_prefix(self) -> str:
        return "cb_"

    def delete_customer(self, person: FakePerson, at: int) -> None:
        """``POST /customers/{id}/delete``: the customer is listed only with ``include_deleted=true``,
        then with ``deleted: true`` and ``updated_at`` of the deletion."""
        self.deleted_ids.add(person.id)
        person.updated = at

    def expected_ids(self) -> set[str]:
        return {p.id for p in self.people if p.id not in self.deleted_ids}

    def settings(self, api_key: str | None = None) -> dict[str, Any]:
        # The site is part of the host (``{site}`` in base_url); served locally the host is 127.0.0.1.
        # One list read at a time, as the suite's request counts and injected failures expect; the sliced
        # first sync (``concurrency`` above 1) has its own tests (tests/test_connectors_concurrency.py).
        return {**super().settings(api_key), "site": "acme", "base_url": self.base_url.replace("://acme.", "://{site}."),
                "concurrency": 1}

    def unauthorised(self) -> httpx.Response:
        return httpx.Response(401, json={"message": "Sorry, authentication failed. Invalid api key",
                                         "api_error_code": "api_authentication_failed",
                                         "error_code": "api_authentication_invalid_key", "http_status_code": 401})

    def customer(self, p: FakePerson) -> dict[str, Any]:
        return {
            "id": p.id, "first_name": p.first_name, "last_name": p.last_name, "email": p.email,
            "company": p.company, "auto_collection": "on", "net_term_days": 0, "allow_direct_debit": False,
            "created_at": p.created, "taxability": "taxable", "updated_at": p.updated, "pii_cleared": "active",
            "channel": "web", "resource_version": p.updated * 1000, "deleted": p.id in self.deleted_ids,
            "object": "customer",
            "billing_address": {"first_name": p.first_name, "last_name": p.last_name, "country": p.country,
                                "validation_status": "not_validated", "object": "billing_address"},
            "card_status": "no_card", "promotional_credits": 0, "refundable_credits": 0,
            "excess_payments": 0, "unbilled_charges": 0, "preferred_currency_code": "USD",
        }

    def subscription(self, p: FakePerson, s: FakeSubscription) -> dict[str, Any]:
        status = CB_STATUS[s.status]
        activated = None if status == "in_trial" else (s.trial_end or s.created)
        return {
            "id": s.id, "customer_id": p.id, "status": status, "billing_period": 1, "billing_period_unit": "month",
            "trial_start": s.trial_start, "trial_end": s.trial_end, "current_term_start": s.created,
            "created_at": s.created, "started_at": s.created, "activated_at": activated,
            "cancelled_at": s.canceled_at, "updated_at": s.updated, "has_scheduled_changes": False,
            "resource_version": s.updated * 1000, "deleted": False, "object": "subscription",
            "currency_code": "USD", "due_invoices_count": 0, "mrr": s.amount if status == "active" else 0,
            "subscription_items": [{"item_price_id": "basic-USD-monthly", "item_type": "plan", "quantity": 1,
                                    "unit_price": s.amount, "amount": s.amount, "object": "subscription_item"}],
        }

    def invoice(self, p: FakePerson, inv: FakeInvoice) -> dict[str, Any]:
        return {
            "id": inv.id, "customer_id": p.id, "subscription_id": inv.subscription, "recurring": True,
            "status": "paid", "price_type": "tax_exclusive", "date": inv.paid_at, "paid_at": inv.paid_at,
            "total": inv.amount_paid, "amount_paid": inv.amount_paid, "amount_adjusted": 0, "credits_applied": 0,
            "amount_due": 0, "updated_at": inv.paid_at, "object": "invoice", "currency_code": "USD",
        }

    def page(self, request: httpx.Request, items: list[dict[str, Any]], path: str) -> httpx.Response:
        params = request.url.params
        token = params.get("offset")
        start = 0 if (token is None or self.loop_path == path) else int(json.loads(token)[0])
        data, more = window(items, start, int(params.get("limit", 10)))
        body: dict[str, Any] = {"list": data}
        if more:
            body["next_offset"] = json.dumps([str(start + len(data)), f"230000000{start:03d}"])
        return httpx.Response(200, json=body)

    @staticmethod
    def in_filter(request: httpx.Request, name: str) -> set[str] | None:
        value = request.url.params.get(name)
        return set(json.loads(value)) if value else None

    def list_customers(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        after = params.get("updated_at[after]")  # strictly after, as Chargebee's timestamp filter
        # ``created_at[after]`` / ``[before]`` are strict too; one request may carry both.
        created_after, created_before = params.get("created_at[after]"), params.get("created_at[before]")
        ids = self.in_filter(request, "id[in]")
        with_deleted = params.get("include_deleted") == "true"
        if "created_at" in (params.get("sort_by[asc]"), params.get("sort_by[desc]")):
            people = sorted(self.people, key=lambda p: (p.created, p.id), reverse="sort_by[desc]" in params)
        else:
            people = sorted(self.people, key=lambda p: (p.updated, p.id))
        items = [{"customer": self.customer(p)} for p in people
                 if (after is None or p.updated > int(after)) and (ids is None or p.id in ids)
                 and (created_after is None or p.created > int(created_after))
                 and (created_before is None or p.created < int(created_before))
                 and (with_deleted or p.id not in self.deleted_ids)]
        return self.page(request, items, "/api/v2/customers")

    def list_subscriptions(self, request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("updated_at[after]")
        ids = self.in_filter(request, "customer_id[in]")
        pairs = [(p, s) for p in self.people for s in p.subscriptions
                 if (ids is None or p.id in ids) and (after is None or s.updated > int(after))
                 and p.id not in self.deleted_ids]
        pairs.sort(key=lambda ps: (ps[1].updated, ps[1].id))
        items = [{"subscription": self.subscription(p, s), "customer": self.customer(p)} for p, s in pairs]
        return self.page(request, items, "/api/v2/subscriptions")

    def list_invoices(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        ids = self.in_filter(request, "customer_id[in]")
        gt = int(params.get("amount_paid[gt]", -1))
        items = [
            {"invoice": self.invoice(p, i)}
            for p in self.people
            for i in sorted(p.invoices, key=lambda i: i.paid_at)
            if (ids is None or p.id in ids) and i.amount_paid > gt
        ]
        return self.page(request, items, "/api/v2/invoices")

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", r"/customers", self.list_customers),
            ("GET", r"/subscriptions", self.list_subscriptions),
            ("GET", r"/invoices", self.list_invoices),
            ("GET", r"/customers/[^/?]+", self.get_customer),
        ]

    def get_customer(self, request: httpx.Request) -> httpx.Response:
        person = next((p for p in self.people if p.id == request.url.path.rsplit("/", 1)[1]), None)
        if person is None:
            return httpx.Response(404, json={"message": "Sorry, we couldn't find that resource",
                                             "api_error_code": "resource_not_found", "http_status_code": 404})
        return httpx.Response(200, json={"customer": self.customer(person)})
