"""Stripe: customers with all their subscriptions and the first non-zero paid invoice of each.

Reads top to bottom: constants, streams, the join, the mapping, the integration's rule (docs/connectors.md):

- lead created = the customer's first trial start (setting ``lead_date=customer_created`` uses the
  customer's ``created`` instead);
- free trial started = the earliest subscription ``trial_start``;
- subscriber since = ``status_transitions.paid_at`` of the first PAID invoice with ``amount_paid > 0``
  of a subscription: the $0 invoice that opens a trial is not a conversion.

Streams:

- ``customers``: ``GET /v1/customers`` (newest first, ``starting_after`` persisted so an interrupted
  backfill resumes), ``created[gte]=<watermark>`` on incremental runs (Stripe has no updated filter).
- ``events``: ``GET /v1/events?types[]=customer.*|customer.subscription.*|invoice.paid`` created since
  the watermark: the customers they name are fetched again, whole; one that reads back deleted
  (``customer.deleted``) is removed from the source. Events live 30 days: a source not
  synced for longer needs ``--full-refresh``. On a first sync it reads the events since the run began.
  A run that reads every event moves the cursor to its own start (less the lookback), even when no event
  came: a quiet account keeps syncing without a full refresh.

Stripe has no multi-customer filter on subscriptions or invoices, so each customer costs one or two
requests (``concurrency`` of them in flight). ``Stripe-Version`` is pinned because response shapes move
between versions (2025-03-31.basil moved ``invoice.subscription`` under ``parent``; both are read).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from connectors.base import Batch, Connector, Feed, Setting, Stream, map_concurrently
from connectors.http import ApiError
from connectors.paging import PageRequest, StripeCursorPaginator, fetch_pages
from connectors.push import WebhookContext, WebhookDelivery, WebhookReceiver, json_body, object_id, require_object
from connectors.signatures import verify_stripe_signature
from funnelsync.normalize import clean_text
from funnelsync.records import SourceCustomerDeletion, SourceCustomerRecord, SubscriptionFact
from funnelsync.timeutil import epoch_seconds, from_epoch

BASE_URL = "https://api.stripe.com"
STRIPE_VERSION = "2024-06-20"
PAGE_SIZE = 100
CONCURRENCY = 4
CHANGE_LOOKBACK = timedelta(minutes=5)
EVENT_RETENTION_DAYS = 30
EVENT_TYPES = (
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.paid",
)

# Stripe subscription status → our subscription state.
STATES = {
    "trialing": "trialing",
    "active": "active",
    "past_due": "past_due",
    "unpaid": "past_due",
    "incomplete": "past_due",  # the first payment failed and is awaited
    "canceled": "cancelled",
    "incomplete_expired": "cancelled",
    "paused": "cancelled",  # a trial ended without a payment method: nothing is paid
}
# Subscriptions that never paid: their customers need no invoice lookup.
NEVER_PAID = frozenset({"trialing", "incomplete", "incomplete_expired"})


def invoice_subscription_id(invoice: dict[str, Any]) -> str | None:
    """The subscription of an invoice, in the pre- and post-2025-03-31 shapes."""
    sub = invoice.get("subscription")
    if sub is None:
        details = (invoice.get("parent") or {}).get("subscription_details") or {}
        sub = details.get("subscription")
    if isinstance(sub, dict):
        sub = sub.get("id")
    return str(sub) if sub else None


def first_paid_by_subscription(invoices: list[dict[str, Any]]) -> dict[str, int]:
    """The earliest ``paid_at`` per subscription among paid invoices with ``amount_paid > 0``."""
    first: dict[str, int] = {}
    for invoice in invoices:
        sub_id = invoice_subscription_id(invoice)
        paid_at = (invoice.get("status_transitions") or {}).get("paid_at")
        if not sub_id or paid_at is None or int(invoice.get("amount_paid") or 0) <= 0:
            continue
        if invoice.get("status", "paid") != "paid":
            continue
        if sub_id not in first or paid_at < first[sub_id]:
            first[sub_id] = paid_at
    return first


def subscription_fact(sub: dict[str, Any], first_paid_at: int | None) -> SubscriptionFact:
    """Map one Stripe subscription (and its first paid time) to a SubscriptionFact."""
    state = STATES.get(sub.get("status") or "", "active")
    # A cancelled subscription ended at ``ended_at``; a live one may be set to cancel (``canceled_at``).
    cancelled = (sub.get("ended_at") or sub.get("canceled_at")) if state == "cancelled" else sub.get("canceled_at")
    return SubscriptionFact(
        external_id=str(sub["id"]),
        state=state,
        trial_started_at=from_epoch(sub.get("trial_start")),
        trial_ended_at=from_epoch(sub.get("trial_end")),
        first_paid_at=from_epoch(first_paid_at),
        cancelled_at=from_epoch(cancelled),
    )


def customer_record(
    customer: dict[str, Any],
    subscriptions: list[dict[str, Any]],
    invoices: list[dict[str, Any]],
    lead_date: str = "trial_start",
) -> SourceCustomerRecord:
    """Map a Stripe customer with all its subscriptions and paid invoices to our record."""
    first_paid = first_paid_by_subscription(invoices)
    facts = [subscription_fact(s, first_paid.get(str(s["id"]))) for s in subscriptions]
    trial_starts = [f.trial_started_at for f in facts if f.trial_started_at is not None]
    trial_started = min(trial_starts) if trial_starts else None
    address = customer.get("address") or {}
    metadata = customer.get("metadata") or {}
    return SourceCustomerRecord(
        external_id=str(customer["id"]),
        name=clean_text(customer.get("name")) or clean_text(customer.get("description")),
        email=clean_text(customer.get("email")),
        # Stripe has no company field; the convention is metadata.company.
        company=clean_text(metadata.get("company") or metadata.get("company_name")),
        country=clean_text(address.get("country")),
        state=clean_text(address.get("state")),
        city=clean_text(address.get("city")),
        zip=clean_text(address.get("postal_code")),
        website_url=clean_text(metadata.get("website") or metadata.get("website_url")),
        lead_created_at=from_epoch(customer.get("created")) if lead_date == "customer_created" else trial_started,
        free_trial_started_at=trial_started,
        subscriptions=facts,
    )


class StripeConnector(Connector, WebhookReceiver):
    """Pull customers, subscriptions (``status=all``) and paid invoices from Stripe; receive its events."""

    kind = "stripe"
    title = "Stripe"
    feeds = frozenset({Feed.PULLED, Feed.PUSHED})
    settings_schema = (
        Setting("api_key", secret=True, required=True, help="a secret key sk_… or a restricted key with read access"),
        Setting("base_url", default=BASE_URL, help="API root (stripe-mock: http://127.0.0.1:12111)"),
        Setting("stripe_version", default=STRIPE_VERSION, help="the pinned Stripe-Version header"),
        Setting("stripe_account", help="a connected account id acct_… (Stripe Connect)"),
        Setting(
            "lead_date",
            default="trial_start",
            choices=("trial_start", "customer_created"),
            help="lead created date: the trial start (default) or the customer's created time",
        ),
        Setting("page_size", default=PAGE_SIZE, cast=int, help="items per request, 1-100"),
        Setting("concurrency", default=CONCURRENCY, cast=int, help="customers fetched in parallel"),
        Setting("webhook_secret", secret=True, help="endpoint signing secret whsec_… for POST /webhooks/NAME"),
    )
    streams = (
        Stream("customers", key="id", cursor_field="created", reader="read_customers"),
        Stream("events", key="id", cursor_field="created", reader="read_events"),
    )

    max_page_size = 100

    def client_options(self) -> dict[str, Any]:
        headers = {"Stripe-Version": self.settings["stripe_version"]}
        if self.settings.get("stripe_account"):
            headers["Stripe-Account"] = self.settings["stripe_account"]
        return {
            "headers": headers,
            "bearer_token": self.settings["api_key"],
            "credentials_hint": "check the api_key setting (Developers > API keys: a secret or restricted key, "
            "live or test as intended)",
        }

    # ------------------------------------------------------------------ streams

    def read_customers(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Every customer (new ones only on incremental runs: events carry the changes)."""

        def request(since: int | None) -> PageRequest:
            params: dict[str, Any] = {"limit": self.page_size}
            if since is not None:
                params["created[gte]"] = since
            return PageRequest("/v1/customers", params)

        def map_page(items: list[dict[str, Any]]) -> tuple[list[SourceCustomerRecord], int | None]:
            live = [c for c in items if not c.get("deleted")]
            return self.records_for(live), max((c["created"] for c in items if c.get("created")), default=None)

        return self.read_list("customers", state, request, StripeCursorPaginator(), map_page)

    def read_events(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Customers named by events since the watermark, fetched again whole."""
        state = self.changes_from(state, CHANGE_LOOKBACK, epoch_seconds)
        age_days = (self._now().timestamp() - int(state["since"])) / 86_400
        if age_days > EVENT_RETENTION_DAYS:
            # Stripe keeps events 30 days: reading from an older cursor would silently miss changes.
            raise ApiError(
                f"{self.source_name}: the last sync was {age_days:.0f} days ago, beyond Stripe's "
                f"{EVENT_RETENTION_DAYS}-day event retention; run `funnelsync sync {self.source_name} "
                "--full-refresh` to read every customer again"
            )

        def request(since: int) -> PageRequest:
            params: dict[str, Any] = {"limit": self.page_size, "created[gte]": since, "types[]": list(EVENT_TYPES)}
            return PageRequest("/v1/events", params)

        def map_page(items: list[dict[str, Any]]) -> tuple[list[Any], int | None]:
            ids: list[str] = []
            for event in items:
                obj = (event.get("data") or {}).get("object") or {}
                customer_id = obj.get("id") if obj.get("object") == "customer" else obj.get("customer")
                if isinstance(customer_id, dict):
                    customer_id = customer_id.get("id")
                if customer_id and customer_id not in ids:
                    ids.append(str(customer_id))
            customers = map_concurrently(self._customer, ids, int(self.settings["concurrency"]))
            live = [c for c in customers if c is not None and not c.get("deleted")]
            # A deleted customer reads back as ``{"id": …, "deleted": true}`` (or 404 once purged).
            gone = [SourceCustomerDeletion(i) for i, c in zip(ids, customers, strict=True)
                    if c is None or c.get("deleted")]
            reached = max((e["created"] for e in items if e.get("created")), default=None)
            return [*self.records_for(live), *gone], reached

        # Every event up to this run's start has been listed once the list is exhausted: a quiet account's
        # cursor moves up to then (less the lookback), never ageing past the retention window.
        caught_up = epoch_seconds(self.started_at - CHANGE_LOOKBACK)
        return self.read_list("events", state, request, StripeCursorPaginator(), map_page, caught_up=caught_up)

    # ------------------------------------------------------------------ the join

    def _all(self, url: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        request = PageRequest(url, {"limit": 100, **params})
        return [item for page in fetch_pages(self.client, request, StripeCursorPaginator()) for item in page.items]

    def _customer(self, customer_id: str) -> dict[str, Any] | None:
        try:
            return self.client.get_json(f"/v1/customers/{customer_id}")
        except ApiError as exc:
            if exc.status == 404:  # deleted for good since the event
                return None
            raise

    def _children(self, customer: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        subs = self._all("/v1/subscriptions", {"customer": customer["id"], "status": "all"})
        invoices: list[dict[str, Any]] = []
        if any(s.get("status") not in NEVER_PAID for s in subs):
            invoices = self._all("/v1/invoices", {"customer": customer["id"], "status": "paid"})
        return subs, invoices

    def records_for(self, customers: list[dict[str, Any]]) -> list[SourceCustomerRecord]:
        """Complete records for customers: all their subscriptions and paid invoices."""
        children = map_concurrently(self._children, customers, int(self.settings["concurrency"]))
        lead_date = self.settings["lead_date"]
        return [customer_record(c, subs, inv, lead_date) for c, (subs, inv) in zip(customers, children, strict=True)]

    def fetch_record(self, customer_id: str) -> SourceCustomerRecord | None:
        """One customer read now (webhooks), with its subscriptions and paid invoices; None when deleted."""
        try:
            customer = self.client.get_json(f"/v1/customers/{quote(customer_id, safe='')}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        if not customer or customer.get("deleted") is True:
            return None
        records = self.records_for([customer])
        return records[0] if records else None

    # ------------------------------------------------------------------ webhooks

    @classmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """An event signed with ``Stripe-Signature``: the customer it is about is read again."""
        verify_stripe_signature(body, headers.get("stripe-signature"), str(settings.get("webhook_secret") or ""))
        event = require_object(json_body(body, "Stripe"), "Stripe event")
        obj = require_object(require_object(event.get("data"), "Stripe event data").get("object"),
                             "Stripe event data.object")
        event_type = str(event.get("type") or "")
        if obj.get("object") == "customer":
            customer = object_id(obj.get("id"), "Stripe event data.object.id")
        else:
            owner = obj.get("customer")
            owner = owner.get("id") if isinstance(owner, dict) else owner
            customer = object_id(owner, "Stripe event data.object.customer")
        if event_type == "customer.deleted" and customer:
            return WebhookDelivery([event_type], deleted=[customer])
        if not customer:
            return WebhookDelivery([event_type])
        return WebhookDelivery([event_type], [customer])
