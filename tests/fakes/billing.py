"""Fake Stripe, Chargebee and Recurly APIs: real paging, filters and field names, in memory."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.fakes.base import FakeApi, FakeInvoice, FakePerson, FakeSubscription, window


def iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(value: str) -> int:
    return int(datetime.fromisoformat(value).timestamp())


# ====================================================================================== Stripe


class StripeFake(FakeApi):
    kind = "stripe"
    base_url = "https://api.stripe.test"
    main_path = "/v1/customers"
    main_stream = "customers"

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

    def get_customer(self, request: httpx.Request) -> httpx.Response:
        person = self.person(request.url.path.rsplit("/", 1)[1])
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


# ==================================================================================== Chargebee

CB_STATUS = {"trialing": "in_trial", "active": "active", "canceled": "cancelled", "past_due": "active"}


class ChargebeeFake(FakeApi):
    kind = "chargebee"
    base_url = "https://acme.chargebee.test/api/v2"
    main_path = "/api/v2/customers"
    main_stream = "customers"

    def id_prefix(self) -> str:
        return "cb_"

    def settings(self, api_key: str | None = None) -> dict[str, Any]:
        return {**super().settings(api_key), "site": "acme", "base_url": "https://{site}.chargebee.test/api/v2"}

    def unauthorised(self) -> httpx.Response:
        return httpx.Response(401, json={"message": "Sorry, authentication failed. Invalid api key",
                                         "api_error_code": "api_authentication_failed",
                                         "error_code": "api_authentication_invalid_key", "http_status_code": 401})

    def customer(self, p: FakePerson) -> dict[str, Any]:
        return {
            "id": p.id, "first_name": p.first_name, "last_name": p.last_name, "email": p.email,
            "company": p.company, "auto_collection": "on", "net_term_days": 0, "allow_direct_debit": False,
            "created_at": p.created, "taxability": "taxable", "updated_at": p.updated, "pii_cleared": "active",
            "channel": "web", "resource_version": p.updated * 1000, "deleted": False, "object": "customer",
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
        after = params.get("updated_at[after]")
        ids = self.in_filter(request, "id[in]")
        people = sorted(self.people, key=lambda p: (p.updated, p.id))
        items = [{"customer": self.customer(p)} for p in people
                 if (after is None or p.updated > int(after)) and (ids is None or p.id in ids)]
        return self.page(request, items, "/api/v2/customers")

    def list_subscriptions(self, request: httpx.Request) -> httpx.Response:
        after = request.url.params.get("updated_at[after]")
        ids = self.in_filter(request, "customer_id[in]")
        pairs = [(p, s) for p in self.people for s in p.subscriptions
                 if (ids is None or p.id in ids) and (after is None or s.updated > int(after))]
        pairs.sort(key=lambda ps: (ps[1].updated, ps[1].id))
        items = [{"subscription": self.subscription(p, s), "customer": self.customer(p)} for p, s in pairs]
        return self.page(request, items, "/api/v2/subscriptions")

    def list_invoices(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        ids = self.in_filter(request, "customer_id[in]")
        gt = int(params.get("amount_paid[gt]", -1))
        items = [{"invoice": self.invoice(p, i)} for p in self.people for i in sorted(p.invoices, key=lambda i: i.paid_at)
                 if (ids is None or p.id in ids) and i.amount_paid > gt]
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


# ====================================================================================== Recurly

RECURLY_STATE = {"trialing": "in_trial", "active": "active", "canceled": "expired", "past_due": "active"}
RECURLY_ACCEPT = "application/vnd.recurly.v2021-02-25"


class RecurlyFake(FakeApi):
    kind = "recurly"
    base_url = "https://v3.recurly.test"
    main_path = "/accounts"
    main_stream = "accounts"

    def id_prefix(self) -> str:
        return "user-"

    def authorised(self, request: httpx.Request) -> bool:
        return super().authorised(request) and request.headers.get("Accept", "").startswith(RECURLY_ACCEPT)

    def unauthorised(self) -> httpx.Response:
        return httpx.Response(401, json={"error": {"type": "unauthorized",
                                                   "message": "Unauthorized. Please check your API key."}})

    def account(self, p: FakePerson) -> dict[str, Any]:
        return {
            "id": "r" + p.id.replace("-", ""), "object": "account", "code": p.id, "state": "active",
            "email": p.email, "first_name": p.first_name, "last_name": p.last_name, "company": p.company,
            "created_at": iso(p.created), "updated_at": iso(p.updated), "deleted_at": None,
            "has_live_subscription": any(s.status != "canceled" for s in p.subscriptions),
            "has_active_subscription": any(s.status == "active" for s in p.subscriptions),
            "has_past_due_invoice": False, "address": {"country": p.country, "city": None, "region": None,
                                                       "postal_code": None},
        }

    def subscription(self, p: FakePerson, s: FakeSubscription) -> dict[str, Any]:
        state = RECURLY_STATE[s.status]
        return {
            "id": "r" + s.id.replace("_", "").replace("-", ""), "uuid": s.id.replace("_", "").replace("-", "") + "0" * 8,
            "object": "subscription",
            "account": {"id": "r" + p.id.replace("-", ""), "object": "account", "code": p.id, "email": p.email,
                        "first_name": p.first_name, "last_name": p.last_name, "company": p.company},
            "plan": {"id": "plan1", "object": "plan", "code": "basic", "name": "Basic"},
            "state": state, "currency": "USD", "unit_amount": s.amount / 100, "quantity": 1,
            "trial_started_at": iso(s.trial_start), "trial_ends_at": iso(s.trial_end),
            "created_at": iso(s.created), "activated_at": iso(s.created), "updated_at": iso(s.updated),
            "canceled_at": iso(s.canceled_at), "expires_at": iso(s.canceled_at), "converted_at": None,
        }

    def page(self, request: httpx.Request, items: list[dict[str, Any]], path: str) -> httpx.Response:
        params = dict(request.url.params)
        cursor = params.pop("cursor", None)
        start = 0 if (cursor is None or self.loop_path == path) else int(cursor)
        data, more = window(items, start, int(params.get("limit", 20)))
        nxt = f"{path}?{urlencode({**params, 'cursor': start + len(data)})}" if more else None
        return httpx.Response(200, json={"object": "list", "has_more": more, "next": nxt, "data": data})

    def list_accounts(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        begin = params.get("begin_time")
        ids = set(params["ids"].split(",")) if params.get("ids") else None
        people = sorted(self.people, key=lambda p: (p.updated, p.id))
        items = [self.account(p) for p in people
                 if (begin is None or p.updated >= from_iso(begin)) and (ids is None or self.account(p)["id"] in ids)]
        return self.page(request, items, "/accounts")

    def account_subscriptions(self, request: httpx.Request) -> httpx.Response:
        account_id = request.url.path.split("/")[2]
        person = next((p for p in self.people if self.account(p)["id"] == account_id), None)
        if person is None:
            return httpx.Response(404, json={"error": {"type": "not_found", "message": "Couldn't find Account"}})
        items = [self.subscription(person, s) for s in person.subscriptions]
        return self.page(request, items, request.url.path)

    def list_subscriptions(self, request: httpx.Request) -> httpx.Response:
        begin = request.url.params.get("begin_time")
        pairs = [(p, s) for p in self.people for s in p.subscriptions if begin is None or s.updated >= from_iso(begin)]
        pairs.sort(key=lambda ps: (ps[1].updated, ps[1].id))
        return self.page(request, [self.subscription(p, s) for p, s in pairs], "/subscriptions")

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("GET", r"/accounts", self.list_accounts),
            ("GET", r"/accounts/[^/?]+/subscriptions", self.account_subscriptions),
            ("GET", r"/subscriptions", self.list_subscriptions),
            ("GET", r"/accounts/[^/?]+", self.get_account),
            ("GET", r"/subscriptions/[^/?]+", self.get_subscription),
        ]

    def get_account(self, request: httpx.Request) -> httpx.Response:
        account_id = request.url.path.rsplit("/", 1)[1]
        person = next((p for p in self.people if self.account(p)["id"] == account_id), None)
        if person is None:
            return httpx.Response(404, json={"error": {"type": "not_found", "message": "Couldn't find Account"}})
        return httpx.Response(200, json=self.account(person))

    def get_subscription(self, request: httpx.Request) -> httpx.Response:
        wanted = request.url.path.rsplit("/", 1)[1]
        for p in self.people:
            for s in p.subscriptions:
                if self.subscription(p, s)["id"] == wanted:
                    return httpx.Response(200, json=self.subscription(p, s))
        return httpx.Response(404, json={"error": {"type": "not_found", "message": "Couldn't find Subscription"}})
