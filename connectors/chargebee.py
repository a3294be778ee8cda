"""Chargebee (API v2): customers with their subscriptions and first paid invoices.

Reads top to bottom: constants, how to page, how to join, how a payload maps to our record, the
rule (lead created = customer ``created_at``; free trial = subscription ``trial_start``; subscriber
since = the first paid, non-zero, recurring invoice).

Streams:

- ``customers``: ``GET /customers?sort_by[asc]=updated_at&include_deleted=true`` (``updated_at[after]``
  once a watermark exists: sending it on a first sync drops customers that have no ``updated_at``, the
  PostHog trap). ``[after]`` is strict, so an incremental run starts ``CHANGE_LOOKBACK`` before the
  watermark: a change stamped in the watermark's second is not missed; what the overlap reads again is
  unchanged and the upsert leaves it alone. A customer listed ``deleted: true`` is removed.
  For each page, ONE ``GET /subscriptions?customer_id[in]=[…]`` and ONE ``GET /invoices?customer_id[in]=
  […]&status[is]=paid&recurring[is]=true`` (each paged) complete the page's records: three requests
  per 100 customers, memory bounded by a page.
- ``subscriptions``: the change feed. Subscriptions updated since the watermark (a trial that
  converted, a cancellation) name their customers, which are rebuilt whole the same way, with the same
  lookback. On a first sync or a full refresh it reads only the changes since the customers stream began
  (which read the rest).

Quirks: every list item wraps its object (``{"customer": {…}}``); ``next_offset`` is an opaque string
passed back verbatim; all times are epoch seconds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from connectors.base import Batch, Connector, Feed, Setting, Slicing, Stream
from connectors.http import ApiError, HttpClient
from connectors.paging import OffsetTokenPaginator, PageRequest, fetch_pages
from connectors.push import WebhookContext, WebhookDelivery, WebhookReceiver, json_body, object_id, require_object
from connectors.signatures import verify_basic_auth
from funnelsync.normalize import clean_text
from funnelsync.records import SourceCustomerDeletion, SourceCustomerRecord, SubscriptionFact
from funnelsync.timeutil import epoch_seconds, from_epoch

BASE_URL = "https://{site}.chargebee.com/api/v2"
PAGE_SIZE = 100
# Slices of a first sync paged at once (``created_at`` ranges): a cursor-paged list is read a page at a
# time, so against a remote API this multiplies a first sync's pace.
CONCURRENCY = 4
CHANGE_LOOKBACK = timedelta(minutes=5)

# Chargebee subscription status → our subscription state.
STATES = {
    "future": "trialing",  # not started, not paying yet: still a lead
    "in_trial": "trialing",
    "active": "active",
    "non_renewing": "active",  # cancels at term end; paid until then
    "paused": "cancelled",
    "cancelled": "cancelled",
}
# Statuses that may have paid at some point; only their customers need an invoice lookup.
MAY_HAVE_PAID = frozenset({"active", "non_renewing", "paused", "cancelled"})


def _in_filter(ids: list[str]) -> str:
    """Chargebee's ``[in]`` filter value: a JSON array of strings."""
    return json.dumps(ids, separators=(",", ":"))


def subscription_fact(sub: dict[str, Any], first_paid_at: int | None) -> SubscriptionFact:
    """Map one Chargebee subscription (and its first paid invoice time) to a SubscriptionFact."""
    status = sub.get("status") or "active"
    state = STATES.get(status, "active")
    if state == "active" and int(sub.get("due_invoices_count") or 0) > 0:
        state = "past_due"
    return SubscriptionFact(
        external_id=str(sub["id"]),
        state=state,
        trial_started_at=from_epoch(sub.get("trial_start")),
        trial_ended_at=from_epoch(sub.get("trial_end")),
        first_paid_at=from_epoch(first_paid_at),
        cancelled_at=from_epoch(sub.get("cancelled_at")) if state == "cancelled" or status == "non_renewing" else None,
    )


def customer_record(
    customer: dict[str, Any], subs: list[dict[str, Any]], first_paid: dict[str, int]
) -> SourceCustomerRecord:
    """Map a Chargebee customer with all its subscriptions to our record (the integration's rule)."""
    address = customer.get("billing_address") or {}
    name = " ".join(p for p in (clean_text(customer.get("first_name")), clean_text(customer.get("last_name"))) if p)
    facts = [subscription_fact(s, first_paid.get(str(s["id"]))) for s in subs]
    trial_starts = [f.trial_started_at for f in facts if f.trial_started_at is not None]
    return SourceCustomerRecord(
        external_id=str(customer["id"]),
        name=name or clean_text(customer.get("company")),
        email=clean_text(customer.get("email")),
        company=clean_text(customer.get("company")) or clean_text(address.get("company")),
        country=clean_text(address.get("country")),
        state=clean_text(address.get("state")),
        city=clean_text(address.get("city")),
        zip=clean_text(address.get("zip")),
        lead_created_at=from_epoch(customer.get("created_at")),
        free_trial_started_at=min(trial_starts) if trial_starts else None,
        subscriptions=facts,
    )


class ChargebeeConnector(Connector, WebhookReceiver):
    """Pull customers, subscriptions and paid invoices from a Chargebee site; receive its events."""

    kind = "chargebee"
    title = "Chargebee"
    feeds = frozenset({Feed.PULLED, Feed.PUSHED})
    settings_schema = (
        Setting("site", required=True, help="the site name: acme for acme.chargebee.com"),
        Setting("api_key", secret=True, required=True, help="a read-only API key"),
        Setting("base_url", default=BASE_URL, help="API root; {site} is replaced (a mock: http://127.0.0.1:8080/api/v2)"),
        Setting("page_size", default=PAGE_SIZE, cast=int, help="items per request, 1-100"),
        Setting("concurrency", default=CONCURRENCY, cast=int,
                help="parts of a first sync read at once (customers created in disjoint time ranges)"),
        Setting("webhook_username", help="HTTP Basic user name set on the Chargebee webhook"),
        Setting("webhook_password", secret=True, help="HTTP Basic password set on the Chargebee webhook"),
    )
    streams = (
        Stream("customers", key="id", cursor_field="updated_at", reader="read_customers"),
        Stream("subscriptions", key="id", cursor_field="updated_at", reader="read_subscription_changes"),
    )

    max_page_size = 100

    def make_client(self) -> HttpClient:
        site = self.settings["site"]
        return self.http_client(
            str(self.settings["base_url"]).replace("{site}", site),
            auth=(self.settings["api_key"], ""),
            credentials_hint=f"check the api_key setting (an API key of site {site!r}, Settings > API Keys)",
        )

    # ------------------------------------------------------------------ streams

    def read_customers(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Every customer (or those updated since the watermark), whole, page by page."""

        def request(since: int | None) -> PageRequest:
            params: dict[str, Any] = {"limit": self.page_size, "sort_by[asc]": "updated_at", "include_deleted": "true"}
            if since is not None:  # never on a first sync: customers without updated_at would vanish
                params["updated_at[after]"] = self._after(since)
            return PageRequest("/customers", params)

        def map_page(items: list[dict[str, Any]]) -> tuple[list[Any], int | None]:
            listed = [item["customer"] for item in items]
            live = [c for c in listed if not c.get("deleted")]
            gone = [SourceCustomerDeletion(str(c["id"])) for c in listed if c.get("deleted")]
            stamps = [c.get("updated_at") or c.get("created_at") for c in listed]
            return [*self.records_for(live), *gone], max((s for s in stamps if s is not None), default=None)

        slicing = Slicing(self._created_slices, self._created_slice_request, epoch_seconds)
        return self.read_list("customers", state, request, OffsetTokenPaginator(), map_page, slicing=slicing)

    def _created_slices(self, count: int) -> list[dict[str, Any]]:
        """``count`` disjoint ``created_at`` ranges covering every customer: even steps from the oldest
        customer's second to the newest's, the last one open-ended (customers created while the read runs)."""

        def edge(order: str) -> int | None:
            body = self.client.request_json(
                PageRequest("/customers", {"limit": 1, f"sort_by[{order}]": "created_at", "include_deleted": "true"})
            )
            listed = body.get("list") or []
            return int(listed[0]["customer"]["created_at"]) if listed else None

        first = edge("asc")
        if first is None:
            return []
        end = max(first, edge("desc") or first) + 1
        step = max(1, -(-(end - first) // max(1, count)))
        starts = list(range(first, end, step))
        return [{"created_from": start, "created_before": starts[i + 1] if i + 1 < len(starts) else None}
                for i, start in enumerate(starts)]

    def _created_slice_request(self, part: dict[str, Any]) -> PageRequest:
        """The customers created in ``[created_from, created_before)``: ``[after]`` and ``[before]`` are strict."""
        params: dict[str, Any] = {"limit": self.page_size, "sort_by[asc]": "created_at", "include_deleted": "true",
                                  "created_at[after]": int(part["created_from"]) - 1}
        if part.get("created_before") is not None:
            params["created_at[before]"] = int(part["created_before"])
        return PageRequest("/customers", params)

    def read_subscription_changes(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Customers whose subscriptions changed since the watermark, rebuilt whole."""
        state = self.changes_from(state, CHANGE_LOOKBACK, epoch_seconds)

        def request(since: int) -> PageRequest:
            return PageRequest(
                "/subscriptions",
                {"limit": self.page_size, "sort_by[asc]": "updated_at", "updated_at[after]": self._after(since)},
            )

        def map_page(items: list[dict[str, Any]]) -> tuple[list[Any], int | None]:
            customers: dict[str, dict[str, Any]] = {}
            for item in items:
                customer = item.get("customer")
                if customer is None:  # older API versions: fetch by id below
                    customer = {"id": item["subscription"]["customer_id"], "_stub": True}
                customers.setdefault(str(customer["id"]), customer)
            stubs = [cid for cid, c in customers.items() if c.get("_stub")]
            if stubs:
                for fetched in self._list("/customers", {"id[in]": _in_filter(stubs)}, "customer"):
                    customers[str(fetched["id"])] = fetched
            live = [c for c in customers.values() if not c.get("_stub") and not c.get("deleted")]
            gone = [SourceCustomerDeletion(cid) for cid, c in customers.items() if c.get("deleted")]
            stamps = [i["subscription"].get("updated_at") for i in items]
            return [*self.records_for(live), *gone], max((s for s in stamps if s is not None), default=None)

        return self.read_list("subscriptions", state, request, OffsetTokenPaginator(), map_page)

    @staticmethod
    def _after(since: int) -> int:
        """The ``updated_at[after]`` of an incremental read: strict, so it starts a lookback earlier."""
        return int(since) - int(CHANGE_LOOKBACK.total_seconds())

    # ------------------------------------------------------------------ the join

    def _list(self, url: str, params: dict[str, Any], resource: str) -> Iterator[dict[str, Any]]:
        request = PageRequest(url, {"limit": self.page_size, **params})
        for page in fetch_pages(self.client, request, OffsetTokenPaginator()):
            for item in page.items:
                yield item[resource]

    def records_for(self, customers: list[dict[str, Any]]) -> list[SourceCustomerRecord]:
        """Complete records for a page of customers: their subscriptions and first paid invoices."""
        if not customers:
            return []
        ids = [str(c["id"]) for c in customers]
        subs_by_customer: dict[str, list[dict[str, Any]]] = {cid: [] for cid in ids}
        for sub in self._list("/subscriptions", {"customer_id[in]": _in_filter(ids)}, "subscription"):
            subs_by_customer.setdefault(str(sub["customer_id"]), []).append(sub)
        payers = [cid for cid in ids if any(s.get("status") in MAY_HAVE_PAID for s in subs_by_customer[cid])]
        first_paid: dict[str, int] = {}
        if payers:
            params = {
                "customer_id[in]": _in_filter(payers),
                "status[is]": "paid",
                "recurring[is]": "true",
                "amount_paid[gt]": 0,
            }
            for invoice in self._list("/invoices", params, "invoice"):
                sub_id, paid_at = invoice.get("subscription_id"), invoice.get("paid_at") or invoice.get("date")
                # The filters above already say so; checked again because the rule is ours.
                if not sub_id or paid_at is None or int(invoice.get("amount_paid") or 0) <= 0:
                    continue
                if not invoice.get("recurring", True):
                    continue
                if sub_id not in first_paid or paid_at < first_paid[sub_id]:
                    first_paid[sub_id] = paid_at
        return [customer_record(c, subs_by_customer[str(c["id"])], first_paid) for c in customers]

    def fetch_record(self, customer_id: str) -> SourceCustomerRecord | None:
        """One customer read now (webhooks), with its subscriptions and first paid invoices; None when deleted."""
        try:
            item = self.client.get_json(f"/customers/{quote(customer_id, safe='')}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        customer = (item or {}).get("customer")
        if not customer or customer.get("deleted") is True:
            return None
        records = self.records_for([customer])
        return records[0] if records else None

    # ------------------------------------------------------------------ webhooks

    @classmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """An event behind the HTTP Basic pair set on the webhook: its customer is read again."""
        verify_basic_auth(
            headers.get("authorization"),
            str(settings.get("webhook_username") or ""),
            str(settings.get("webhook_password") or ""),
        )
        event = require_object(json_body(body, "Chargebee"), "Chargebee event")
        content = require_object(event.get("content"), "Chargebee event content")
        customer_obj, subscription_obj = content.get("customer"), content.get("subscription")
        owner = (customer_obj.get("id") if isinstance(customer_obj, dict) else None) or (
            subscription_obj.get("customer_id") if isinstance(subscription_obj, dict) else None
        )
        customer = object_id(owner, "Chargebee customer id")
        event_type = str(event.get("event_type") or "")
        if event_type == "customer_deleted" and customer:
            return WebhookDelivery([event_type], deleted=[customer])
        if not customer:
            return WebhookDelivery([event_type])
        return WebhookDelivery([event_type], [customer])
