"""Paddle Billing: customers with their subscriptions.

Reads top to bottom: constants, how to page, the mapping, the integration's rule (lead created = the
customer's ``created_at``; free trial started = the earliest subscription trial start; subscriber
since = the first subscription's ``first_billed_at``).

Stream ``customers``: ``GET /customers?order_by=updated_at[ASC]`` paged by ``meta.pagination.next``
while ``has_more``, ``updated_at[GT]=<watermark>`` on incremental runs; each page's subscriptions come
from one ``GET /subscriptions?customer_id=<ids>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from connectors.base import Batch, Connector, Setting, Stream
from connectors.paging import PageRequest, fetch_pages
from funnelsync.normalize import clean_text
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from funnelsync.timeutil import parse_iso

BASE_URL = "https://api.paddle.com"
PAGE_SIZE = 200
STATES = {"trialing": "trialing", "active": "active", "past_due": "past_due", "paused": "cancelled",
          "canceled": "cancelled"}


@dataclass(frozen=True)
class PaddlePaginator:
    """Paddle lists: request ``meta.pagination.next`` verbatim while ``has_more``.

    Example page::

        {"data": [{"id": "ctm_01", ...}],
         "meta": {"pagination": {"per_page": 200, "has_more": true,
                                 "next": "https://api.paddle.com/customers?after=ctm_01&per_page=200"}}}
    """

    def items(self, body: Any) -> list[Any]:
        return list(body.get("data") or [])

    def next_token(self, body: Any) -> str | None:
        pagination = (body.get("meta") or {}).get("pagination") or {}
        return str(pagination["next"]) if pagination.get("has_more") and pagination.get("next") else None

    def apply(self, request: PageRequest, token: str) -> PageRequest:
        return replace(request, url=token, params={})


def customer_record(customer: dict[str, Any], subscriptions: list[dict[str, Any]]) -> SourceCustomerRecord:
    """A Paddle customer with its subscriptions → our record."""
    facts = []
    for sub in subscriptions:
        trial = next((i.get("trial_dates") for i in sub.get("items") or [] if i.get("trial_dates")), None) or {}
        facts.append(SubscriptionFact(
            external_id=str(sub["id"]),
            state=STATES.get(str(sub.get("status")), "active"),
            trial_started_at=parse_iso(trial.get("starts_at")),
            trial_ended_at=parse_iso(trial.get("ends_at")),
            first_paid_at=parse_iso(sub.get("first_billed_at")),
            cancelled_at=parse_iso(sub.get("canceled_at")),
        ))
    trials = [f.trial_started_at for f in facts if f.trial_started_at is not None]
    return SourceCustomerRecord(
        external_id=str(customer["id"]),
        name=clean_text(customer.get("name")),
        email=clean_text(customer.get("email")),
        lead_created_at=parse_iso(customer.get("created_at")),
        free_trial_started_at=min(trials) if trials else None,
        subscriptions=facts,
    )


class PaddleConnector(Connector):
    """Pull customers and their subscriptions from Paddle Billing."""

    kind = "paddle"
    title = "Paddle"
    settings_schema = (
        Setting("api_key", secret=True, required=True, help="a Paddle API key (Developer tools > Authentication)"),
        Setting("base_url", default=BASE_URL, help="API root (sandbox: https://sandbox-api.paddle.com)"),
        Setting("page_size", default=PAGE_SIZE, cast=int, help="customers per request, 1-200"),
    )
    streams = (Stream("customers", key="id", cursor_field="updated_at", reader="read_customers"),)
    max_page_size = PAGE_SIZE

    def client_options(self) -> dict[str, Any]:
        return {"bearer_token": self.settings["api_key"], "credentials_hint": "check the api_key setting"}

    def read_customers(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Every customer (or those updated since the watermark), with its subscriptions."""

        def request(since: str | None) -> PageRequest:
            params: dict[str, Any] = {"per_page": self.page_size, "order_by": "updated_at[ASC]"}
            if since is not None:
                params["updated_at[GT]"] = since
            return PageRequest("/customers", params)

        def map_page(items: list[dict[str, Any]]) -> tuple[list[SourceCustomerRecord], str | None]:
            ids = [str(c["id"]) for c in items]
            subs: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
            if ids:
                listing = PageRequest("/subscriptions", {"customer_id": ",".join(ids), "per_page": 200})
                for page in fetch_pages(self.client, listing, PaddlePaginator()):
                    for sub in page.items:
                        subs.setdefault(str(sub["customer_id"]), []).append(sub)
            stamps = [str(c["updated_at"]) for c in items if c.get("updated_at")]
            return [customer_record(c, subs[str(c["id"])]) for c in items], max(stamps, default=None)

        return self.read_list("customers", state, request, PaddlePaginator(), map_page)
