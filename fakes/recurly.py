"""A fake Recurly API (v3): real paging (the ``next`` link while ``has_more``), filters and field names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from fakes.base import FakeApi, FakeInvoice, FakePerson, FakeSubscription, window


def iso(epoch: int | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_iso(value: str) -> int:
    return int(datetime.fromisoformat(value).timestamp())

# v2021-02-25 subscription states are active|canceled|expired|failed|future|paused: a subscription in its
# trial is ``active`` (``in_trial`` exists only as a list filter).
RECURLY_STATE = {"trialing": "active", "active": "active", "canceled": "expired", "past_due": "active"}
# ``ids`` "cannot be used with any other ordering or filtering parameters" (openapi/api.yaml).
IDS_EXCLUSIVE_OF = frozenset({"limit", "order", "sort", "begin_time", "end_time", "email", "subscriber",
                              "past_due", "state", "type"})
RECURLY_ACCEPT = "application/vnd.recurly.v2021-02-25"


class RecurlyFake(FakeApi):
    kind = "recurly"
    base_url = "https://v3.recurly.test"
    main_path = "/accounts"
    main_stream = "accounts"

    def __init__(self, n: int = 25, page_size: int = 10) -> None:
        super().__init__(n, page_size)
        self.closed: dict[str, int] = {}  # person id -> when the account was deactivated
        self.gift_card_converted: dict[str, int] = {}  # subscription id -> ``converted_at``
        # Invoice id -> a state other than ``paid`` (``past_due``: collection failed; ``processing``: a bank
        # payment under way): not listed by ``state=paid``, no ``closed_at``; a past-due one marks its account.
        self.invoice_states: dict[str, str] = {}

    def id_prefix(self) -> str:
        return "user-"

    def close_account(self, person: FakePerson, at: int) -> None:
        """``DELETE /accounts/{id}`` (deactivate): state ``inactive``, ``deleted_at`` set, updated then."""
        self.closed[person.id] = at
        person.updated = at

    def authorised(self, request: httpx.Request) -> bool:
        return super().authorised(request) and request.headers.get("Accept", "").startswith(RECURLY_ACCEPT)

    def unauthorised(self) -> httpx.Response:
        return httpx.Response(401, json={"error": {"type": "unauthorized",
                                                   "message": "Unauthorized. Please check your API key."}})

    def account(self, p: FakePerson) -> dict[str, Any]:
        return {
            "id": "r" + p.id.replace("-", ""), "object": "account", "code": p.id,
            "state": "inactive" if p.id in self.closed else "active",
            "email": p.email, "first_name": p.first_name, "last_name": p.last_name, "company": p.company,
            "created_at": iso(p.created), "updated_at": iso(p.updated), "deleted_at": iso(self.closed.get(p.id)),
            "has_live_subscription": any(s.status != "canceled" for s in p.subscriptions),
            "has_active_subscription": any(s.status == "active" for s in p.subscriptions),
            "has_past_due_invoice": any(self.invoice_states.get(i.id) == "past_due" for i in p.invoices),
            "address": {"country": p.country, "city": None, "region": None, "postal_code": None},
        }

    def subscription(self, p: FakePerson, s: FakeSubscription) -> dict[str, Any]:
        state = RECURLY_STATE[s.status]
        return {
            "id": "r" + s.id.replace("_", "").replace("-", ""),
            "uuid": s.id.replace("_", "").replace("-", "") + "0" * 8,
            "object": "subscription",
            "account": {"id": "r" + p.id.replace("-", ""), "object": "account", "code": p.id, "email": p.email,
                        "first_name": p.first_name, "last_name": p.last_name, "company": p.company},
            "plan": {"id": "plan1", "object": "plan", "code": "basic", "name": "Basic"},
            "state": state, "currency": "USD", "unit_amount": s.amount / 100, "quantity": 1,
            "trial_started_at": iso(s.trial_start), "trial_ends_at": iso(s.trial_end),
            "created_at": iso(s.created), "activated_at": iso(s.created), "updated_at": iso(s.updated),
            "canceled_at": iso(s.canceled_at), "expires_at": iso(s.canceled_at),
            "converted_at": iso(self.gift_card_converted.get(s.id)),
        }

    def invoice(self, p: FakePerson, inv: FakeInvoice) -> dict[str, Any]:
        sub = next(s for s in p.subscriptions if s.id == inv.subscription)
        state = self.invoice_states.get(inv.id, "paid")
        paid = inv.amount_paid / 100 if state == "paid" else 0
        return {
            "id": "i" + inv.id.replace("_", ""), "object": "invoice", "type": "charge",
            "origin": "purchase" if inv.billing_reason == "subscription_create" else "renewal", "state": state,
            "account": {"id": "r" + p.id.replace("-", ""), "object": "account", "code": p.id},
            "subscription_ids": [self.subscription(p, sub)["id"]], "currency": "USD",
            "subtotal": inv.amount_paid / 100, "total": inv.amount_paid / 100, "paid": paid,
            "balance": inv.amount_paid / 100 - paid, "created_at": iso(inv.paid_at),
            "closed_at": iso(inv.paid_at) if state == "paid" else None, "due_at": iso(inv.paid_at),
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
        if ids is not None:
            mixed = sorted(IDS_EXCLUSIVE_OF & set(params.keys()))
            if mixed:
                return httpx.Response(400, json={"error": {
                    "type": "invalid_api_usage",
                    "message": f"`ids` cannot be used with any other ordering or filtering parameters ({mixed[0]})"}})
            if len(ids) > 200:
                return httpx.Response(400, json={"error": {"type": "invalid_api_usage",
                                                           "message": "Up to 200 IDs can be passed at once"}})
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

    def account_invoices(self, request: httpx.Request) -> httpx.Response:
        account_id = request.url.path.split("/")[2]
        person = next((p for p in self.people if self.account(p)["id"] == account_id), None)
        if person is None:
            return httpx.Response(404, json={"error": {"type": "not_found", "message": "Couldn't find Account"}})
        state = request.url.params.get("state")
        items = [self.invoice(person, i) for i in sorted(person.invoices, key=lambda i: i.paid_at)]
        items = [i for i in items if state in (None, "all", i["state"])]
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
            ("GET", r"/accounts/[^/?]+/invoices", self.account_invoices),
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
