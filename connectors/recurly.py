"""Recurly (API v3, ``v2021-02-25``): accounts with all their subscriptions.

Reads top to bottom: constants, streams, the join, the mapping, the integration's rule (docs/connectors.md):

- lead created = the trial start (the earliest ``trial_started_at`` of the account's subscriptions);
- free trial started = the same ``trial_started_at``;
- subscriber since = when the first non-zero subscription started charging: ``converted_at`` when
  Recurly reports it, else the trial end of a trial that ran to its end without the subscription
  expiring, else ``activated_at`` of a subscription without a trial; a zero-priced plan never counts.

Streams:

- ``accounts``: ``GET /accounts?sort=updated_at&order=asc&begin_time=<watermark>`` (ascending, as the
  API spec advises: descending lets updated records move behind the cursor); each account's
  subscriptions come from ``GET /accounts/{id}/subscriptions`` (all states).
- ``subscriptions``: the change feed, ``GET /subscriptions?sort=updated_at&order=asc&begin_time=…``;
  the accounts they name (``GET /accounts?ids=…``) are rebuilt whole. On a first sync or a full
  refresh it reads only the changes since the accounts stream began.

Quirks: the version travels in the ``Accept`` header; ``next`` is a path requested verbatim (keeping
the ``Accept`` header); times are ISO-8601 strings; a 429 carries ``X-RateLimit-Reset`` (epoch s).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from connectors.base import Batch, Connector, Feed, Setting, Stream, map_concurrently
from connectors.http import ApiError
from connectors.paging import NextLinkPaginator, PageRequest, fetch_pages
from connectors.push import (
    Rereader,
    WebhookContext,
    WebhookDelivery,
    WebhookReceiver,
    json_body,
    object_id,
    require_object,
)
from connectors.signatures import WebhookPayloadError, verify_recurly_signature
from funnelsync.normalize import clean_text
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from funnelsync.timeutil import parse_iso

BASE_URL = "https://v3.recurly.com"
ACCEPT = "application/vnd.recurly.v2021-02-25"
PAGE_SIZE = 200
CONCURRENCY = 4
CHANGE_LOOKBACK = timedelta(minutes=5)

# Recurly subscription state → our subscription state (``canceled`` is refined below: it still runs
# until its term ends).
STATES = {
    "in_trial": "trialing",
    "future": "trialing",
    "active": "active",
    "canceled": "active",
    "expired": "cancelled",
    "paused": "cancelled",
    "failed": "cancelled",
}


def _iso(value: str | None) -> str | None:
    """A Recurly time normalised to ISO 8601 UTC with offset, so watermarks compare as strings."""
    parsed = parse_iso(value)
    return parsed.isoformat() if parsed else None


def _amount(sub: dict[str, Any]) -> float:
    for key in ("unit_amount", "subtotal", "total"):
        if sub.get(key) is not None:
            return float(sub[key])
    return 1.0  # unknown price: assume a paid plan rather than hide a conversion


def first_paid_at(sub: dict[str, Any], now: datetime) -> datetime | None:
    """When a subscription first charged a non-zero amount, from its timeline (None if never)."""
    if _amount(sub) <= 0:
        return None
    if sub.get("converted_at"):
        return parse_iso(sub["converted_at"])
    trial_end = parse_iso(sub.get("trial_ends_at"))
    ended = parse_iso(sub.get("expires_at"))
    if sub.get("trial_started_at"):
        # A trial converts when it runs out and the subscription carries on past it; one cancelled
        # during its trial expires at the trial end, unpaid.
        if trial_end is None or trial_end > now or sub.get("state") in ("in_trial", "future"):
            return None
        if ended is not None and ended <= trial_end:
            return None
        return trial_end
    if sub.get("state") == "future":
        return None
    return parse_iso(sub.get("activated_at"))


def subscription_fact(sub: dict[str, Any], past_due: bool, now: datetime) -> SubscriptionFact:
    """Map one Recurly subscription to a SubscriptionFact."""
    status = sub.get("state") or "active"
    paid = first_paid_at(sub, now)
    state = STATES.get(status, "active")
    if status == "canceled" and paid is None:
        trial_end = parse_iso(sub.get("trial_ends_at"))
        state = "trialing" if trial_end is not None and trial_end > now else "cancelled"
    if state == "active" and past_due:
        state = "past_due"
    cancelled = sub.get("expires_at") if state == "cancelled" else sub.get("canceled_at")
    return SubscriptionFact(
        external_id=str(sub.get("uuid") or sub["id"]),
        state=state,
        trial_started_at=parse_iso(sub.get("trial_started_at")),
        trial_ended_at=parse_iso(sub.get("trial_ends_at")),
        first_paid_at=paid,
        cancelled_at=parse_iso(cancelled or sub.get("canceled_at")),
    )


def account_record(account: dict[str, Any], subscriptions: list[dict[str, Any]], now: datetime) -> SourceCustomerRecord:
    """Map a Recurly account with all its subscriptions to our record (the integration's rule)."""
    past_due = bool(account.get("has_past_due_invoice"))
    facts = [subscription_fact(s, past_due, now) for s in subscriptions]
    trial_starts = [f.trial_started_at for f in facts if f.trial_started_at is not None]
    trial_started = min(trial_starts) if trial_starts else None
    address = account.get("address") or {}
    name = " ".join(p for p in (clean_text(account.get("first_name")), clean_text(account.get("last_name"))) if p)
    return SourceCustomerRecord(
        # The account code is the merchant's own id for the customer (often its user id), so it is
        # what other sources share; Recurly's internal id is the fallback.
        external_id=str(account.get("code") or account["id"]),
        name=name or clean_text(account.get("company")),
        email=clean_text(account.get("email")),
        company=clean_text(account.get("company")),
        country=clean_text(address.get("country")),
        state=clean_text(address.get("region")),
        city=clean_text(address.get("city")),
        zip=clean_text(address.get("postal_code")),
        lead_created_at=trial_started,
        free_trial_started_at=trial_started,
        subscriptions=facts,
    )


# Notification object types whose object names its account (``account.id``), and where to read one.
OBJECT_PATHS = {
    "subscription": "/subscriptions",
    "invoice": "/invoices",
    "charge_invoice": "/invoices",
    "credit_invoice": "/invoices",
    "payment": "/transactions",
    "transaction": "/transactions",
}


class RecurlyConnector(Connector, WebhookReceiver):
    """Pull accounts and subscriptions from Recurly API v3; receive its notifications."""

    kind = "recurly"
    title = "Recurly"
    feeds = frozenset({Feed.PULLED, Feed.PUSHED})
    settings_schema = (
        Setting("api_key", secret=True, required=True, help="a private API key"),
        Setting("base_url", default=BASE_URL, help="API root (EU: https://v3.eu.recurly.com)"),
        Setting("page_size", default=PAGE_SIZE, cast=int, help="items per request, 1-200"),
        Setting("concurrency", default=CONCURRENCY, cast=int, help="accounts fetched in parallel"),
        Setting("webhook_secret", secret=True, help="the webhook endpoint's secret key (recurly-signature)"),
    )
    streams = (
        Stream("accounts", key="code", cursor_field="updated_at", reader="read_accounts"),
        Stream("subscriptions", key="uuid", cursor_field="updated_at", reader="read_subscription_changes"),
    )

    max_page_size = 200

    def client_options(self) -> dict[str, Any]:
        return {
            "headers": {"Accept": ACCEPT},
            "auth": (self.settings["api_key"], ""),
            "credentials_hint": "check the api_key setting (Integrations > API Credentials: a private key of "
            "this site, and base_url for EU sites)",
        }

    def _ordered(self, url: str, since: str | None) -> PageRequest:
        params: dict[str, Any] = {"limit": self.page_size, "sort": "updated_at", "order": "asc"}
        if since is not None:
            params["begin_time"] = since
        return PageRequest(url, params)

    # ------------------------------------------------------------------ streams

    def read_accounts(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Every account (or those updated since the watermark), whole, page by page."""

        def map_page(items: list[dict[str, Any]]) -> tuple[list[SourceCustomerRecord], str | None]:
            live = [a for a in items if not a.get("deleted_at")]
            stamps = [_iso(a.get("updated_at") or a.get("created_at")) for a in items]
            return self.records_for(live), max((s for s in stamps if s), default=None)

        return self.read_list(
            "accounts", state, lambda since: self._ordered("/accounts", since), NextLinkPaginator(), map_page
        )

    def read_subscription_changes(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Accounts whose subscriptions changed since the watermark, rebuilt whole."""
        state = self.changes_from(state, CHANGE_LOOKBACK, datetime.isoformat)

        def map_page(items: list[dict[str, Any]]) -> tuple[list[SourceCustomerRecord], str | None]:
            ids = list(dict.fromkeys(str(s["account"]["id"]) for s in items if s.get("account")))
            accounts: list[dict[str, Any]] = []
            if ids:
                request = PageRequest("/accounts", {"ids": ",".join(ids), "limit": 200})
                for page in fetch_pages(self.client, request, NextLinkPaginator()):
                    accounts.extend(a for a in page.items if not a.get("deleted_at"))
            stamps = [_iso(s.get("updated_at")) for s in items]
            return self.records_for(accounts), max((s for s in stamps if s), default=None)

        return self.read_list(
            "subscriptions",
            state,
            lambda since: self._ordered("/subscriptions", since),
            NextLinkPaginator(),
            map_page,
        )

    # ------------------------------------------------------------------ the join

    def _subscriptions(self, account: dict[str, Any]) -> list[dict[str, Any]]:
        request = PageRequest(f"/accounts/{account['id']}/subscriptions", {"limit": 200})
        return [s for page in fetch_pages(self.client, request, NextLinkPaginator()) for s in page.items]

    def records_for(self, accounts: list[dict[str, Any]]) -> list[SourceCustomerRecord]:
        """Complete records for accounts: all their subscriptions (every state)."""
        subs = map_concurrently(self._subscriptions, accounts, int(self.settings["concurrency"]))
        now = self._now()
        return [account_record(a, s, now) for a, s in zip(accounts, subs, strict=True)]

    def fetch_record(self, account_id: str) -> SourceCustomerRecord | None:
        """One account read now (webhooks), with all its subscriptions; None when it is gone."""
        try:
            account = self.client.get_json(f"/accounts/{quote(account_id, safe='')}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        if not account or account.get("deleted") is True:
            return None
        records = self.records_for([account])
        return records[0] if records else None

    # ------------------------------------------------------------------ webhooks

    @classmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """A JSON notification signed with ``recurly-signature``: an account, or an object naming one."""
        verify_recurly_signature(body, headers.get("recurly-signature"), str(settings.get("webhook_secret") or ""))
        note = require_object(json_body(body, "Recurly"), "Recurly notification")
        object_type, item_id = note.get("object_type"), object_id(note.get("id"), "Recurly notification id")
        if not isinstance(object_type, str) or not item_id:
            raise WebhookPayloadError("Recurly notification lacks object_type or id")
        event = f"{object_type}.{note.get('event_type')}"
        if object_type == "account":
            return WebhookDelivery([event], [item_id])
        return WebhookDelivery([event], lookups=[(object_type, item_id)])

    @classmethod
    def customers_of(cls, connector: Rereader, lookups: list[tuple[str, str]]) -> list[str]:
        """The accounts of the objects notifications name (a subscription, an invoice, a transaction)."""
        found: list[str] = []
        for object_type, item_id in lookups:
            path = OBJECT_PATHS.get(object_type)
            if path is None:
                continue
            try:
                item = connector.client.get_json(f"{path}/{quote(item_id, safe='')}")
            except ApiError as exc:
                if exc.status == 404:
                    continue
                raise
            account = (item or {}).get("account") or {}
            if account.get("id"):
                found.append(str(account["id"]))
        return found
