"""Recurly (API v3, ``v2021-02-25``): accounts with all their subscriptions and paid invoices.

Reads top to bottom: constants, streams, the join, the mapping, the integration's rule (docs/connectors.md):

- lead created = the trial start (the earliest ``trial_started_at`` of the account's subscriptions);
- free trial started = the same ``trial_started_at``;
- subscriber since = when the first non-zero charge of a subscription was paid: the ``closed_at`` of
  its first paid charge invoice with a positive ``total``, else the trial end of a trial the
  subscription outlived (it became active) while its account has no past-due invoice (a failed charge
  at the trial end pays nothing); a zero-priced plan never counts. ``converted_at`` is not
  read: Recurly sets it when a gift card converts a subscription, not when a trial does.

Recurly v3 has no ``in_trial`` subscription state (only a list filter of that name): a subscription in
its trial is ``active`` with ``trial_ends_at`` still ahead.

Streams:

- ``accounts``: ``GET /accounts?sort=updated_at&order=asc&begin_time=<watermark>`` (ascending, as the
  API spec advises: descending lets updated records move behind the cursor); each account's
  subscriptions come from ``GET /accounts/{id}/subscriptions`` (all states) and its paid invoices
  from ``GET /accounts/{id}/invoices?state=paid``. An inactive account with ``deleted_at`` is removed.
- ``subscriptions``: the change feed, ``GET /subscriptions?sort=updated_at&order=asc&begin_time=…``;
  the accounts they name (``GET /accounts?ids=…``, up to 200 ids and no other parameter: the API
  refuses ``ids`` with any ordering or filtering) are rebuilt whole. On a first sync or a full
  refresh it reads only the changes since the accounts stream began.

Quirks: the version travels in the ``Accept`` header; ``next`` is a path requested verbatim (keeping
the ``Accept`` header); times are ISO-8601 strings. Rate limits are counted over a sliding 5-minute
window: a 429's ``X-RateLimit-Reset`` (epoch s) is waited out in full, up to ``rate_limit_max_wait``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, cast
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
from funnelsync.records import SourceCustomerDeletion, SourceCustomerRecord, SubscriptionFact
from funnelsync.timeutil import parse_iso

BASE_URL = "https://v3.recurly.com"
ACCEPT = "application/vnd.recurly.v2021-02-25"
PAGE_SIZE = 200
CONCURRENCY = 4
CHANGE_LOOKBACK = timedelta(minutes=5)
IDS_PER_REQUEST = 200
# The window is five minutes: a reset can be that far away, and a wait cut short only fails again.
RATE_LIMIT_MAX_WAIT = 330.0

# Recurly subscription state → our subscription state (``active`` in a running trial and ``canceled``
# are refined below: a cancelled subscription still runs until its term ends).
STATES = {
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


def first_paid_by_subscription(invoices: list[dict[str, Any]]) -> dict[str, datetime]:
    """The earliest ``closed_at`` per subscription id among paid charge invoices with ``total > 0``."""
    first: dict[str, datetime] = {}
    for invoice in invoices:
        if invoice.get("state") != "paid" or invoice.get("type") == "credit":
            continue
        if float(invoice.get("total") or 0) <= 0:
            continue
        paid = parse_iso(invoice.get("closed_at"))
        if paid is None:
            continue
        for sub_id in invoice.get("subscription_ids") or ():
            if str(sub_id) not in first or paid < first[str(sub_id)]:
                first[str(sub_id)] = paid
    return first


def in_trial(sub: dict[str, Any], now: datetime) -> bool:
    """A subscription whose trial is running now (Recurly reports it ``active``)."""
    trial_end = parse_iso(sub.get("trial_ends_at"))
    return bool(sub.get("trial_started_at")) and trial_end is not None and trial_end > now


def first_paid_at(
    sub: dict[str, Any], now: datetime, invoice_paid: datetime | None = None, past_due: bool = False
) -> datetime | None:
    """When a subscription first paid a non-zero amount (None if never): its first paid non-zero
    invoice, else the end of a trial the subscription outlived, unless the account has a past-due
    invoice (the charge at the trial end failed: nothing was paid)."""
    if _amount(sub) <= 0:
        return None
    if invoice_paid is not None:
        return invoice_paid
    if past_due:
        return None
    trial_end = parse_iso(sub.get("trial_ends_at"))
    ended = parse_iso(sub.get("expires_at"))
    if not sub.get("trial_started_at") or trial_end is None:
        return None
    # A trial converts when it runs out and the subscription carries on past it; one cancelled
    # during its trial expires at the trial end, unpaid.
    if in_trial(sub, now) or sub.get("state") in ("future", "failed"):
        return None
    if ended is not None and ended <= trial_end:
        return None
    return trial_end


def subscription_fact(
    sub: dict[str, Any], past_due: bool, now: datetime, invoice_paid: datetime | None = None
) -> SubscriptionFact:
    """Map one Recurly subscription (and the payment of its first paid non-zero invoice) to a SubscriptionFact."""
    status = sub.get("state") or "active"
    paid = first_paid_at(sub, now, invoice_paid, past_due)
    state = STATES.get(status, "active")
    if status == "active" and paid is None and in_trial(sub, now):
        state = "trialing"
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


def account_record(
    account: dict[str, Any], subscriptions: list[dict[str, Any]], now: datetime,
    invoices: list[dict[str, Any]] | None = None,
) -> SourceCustomerRecord:
    """Map a Recurly account with all its subscriptions and paid invoices to our record (the integration's rule)."""
    past_due = bool(account.get("has_past_due_invoice"))
    first_paid = first_paid_by_subscription(invoices or [])
    facts = [subscription_fact(s, past_due, now, first_paid.get(str(s.get("id")))) for s in subscriptions]
    trial_starts = [f.trial_started_at for f in facts if f.trial_started_at is not None]
    trial_started = min(trial_starts) if trial_starts else None
    address = account.get("address") or {}
    name = " ".join(p for p in (clean_text(account.get("first_name")), clean_text(account.get("last_name"))) if p)
    return SourceCustomerRecord(
        # The account code is the merchant's own id for the customer (often its user id), so it is
        # what other sources share; Recurly's internal id is the fallback.
        external_id=account_key(account),
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


def account_key(account: dict[str, Any]) -> str:
    """The external id of an account: its code, else Recurly's id."""
    return str(account.get("code") or account["id"])


def is_deleted(account: dict[str, Any]) -> bool:
    """An account closed in Recurly: inactive, with ``deleted_at`` ("when the account was last marked
    inactive"; a reactivated account is active again and keeps the stamp)."""
    return bool(account.get("deleted_at")) and account.get("state") != "active"


def split_deleted(accounts: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[SourceCustomerDeletion]]:
    """Live accounts, and deletions of the closed ones."""
    live = [a for a in accounts if not is_deleted(a)]
    return live, [SourceCustomerDeletion(account_key(a)) for a in accounts if is_deleted(a)]


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
        Setting("rate_limit_max_wait", default=RATE_LIMIT_MAX_WAIT, cast=float,
                help="the longest wait for X-RateLimit-Reset after a 429, in seconds"),
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
            "max_hinted_wait": float(self.settings["rate_limit_max_wait"]),
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

        def map_page(items: list[dict[str, Any]]) -> tuple[list[Any], str | None]:
            live, gone = split_deleted(items)
            stamps = [_iso(a.get("updated_at") or a.get("created_at")) for a in items]
            return [*self.records_for(live), *gone], max((s for s in stamps if s), default=None)

        return self.read_list(
            "accounts", state, lambda since: self._ordered("/accounts", since), NextLinkPaginator(), map_page
        )

    def read_subscription_changes(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Accounts whose subscriptions changed since the watermark, rebuilt whole."""
        state = self.changes_from(state, CHANGE_LOOKBACK, datetime.isoformat)

        def map_page(items: list[dict[str, Any]]) -> tuple[list[Any], str | None]:
            ids = list(dict.fromkeys(str(s["account"]["id"]) for s in items if s.get("account")))
            live, gone = split_deleted(self._accounts(ids))
            stamps = [_iso(s.get("updated_at")) for s in items]
            return [*self.records_for(live), *gone], max((s for s in stamps if s), default=None)

        return self.read_list(
            "subscriptions",
            state,
            lambda since: self._ordered("/subscriptions", since),
            NextLinkPaginator(),
            map_page,
        )

    # ------------------------------------------------------------------ the join

    def _accounts(self, ids: list[str]) -> list[dict[str, Any]]:
        """Accounts by id, 200 a request, ``ids`` alone (the API refuses it with any other parameter)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), IDS_PER_REQUEST):
            body = self.client.get_json("/accounts", {"ids": ",".join(ids[start : start + IDS_PER_REQUEST])})
            found.extend((body or {}).get("data") or [])
        return found

    def _children(self, account: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        request = PageRequest(f"/accounts/{account['id']}/subscriptions", {"limit": 200})
        subs = [s for page in fetch_pages(self.client, request, NextLinkPaginator()) for s in page.items]
        invoices: list[dict[str, Any]] = []
        now = self._now()
        if any(s.get("state") != "future" and not in_trial(s, now) for s in subs):
            request = PageRequest(f"/accounts/{account['id']}/invoices", {"limit": 200, "state": "paid"})
            invoices = [i for page in fetch_pages(self.client, request, NextLinkPaginator()) for i in page.items]
        return subs, invoices

    def records_for(self, accounts: list[dict[str, Any]]) -> list[SourceCustomerRecord]:
        """Complete records for accounts: all their subscriptions (every state) and paid invoices."""
        children = map_concurrently(self._children, accounts, int(self.settings["concurrency"]))
        now = self._now()
        return [account_record(a, s, now, inv) for a, (s, inv) in zip(accounts, children, strict=True)]

    def read_account(self, account_id: str) -> dict[str, Any] | None:
        """One account as it reads now (``GET /accounts/{id}``); None when Recurly has no such account."""
        try:
            account = self.client.get_json(f"/accounts/{quote(account_id, safe='')}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return account or None

    def fetch_record(self, account_id: str) -> SourceCustomerRecord | None:
        """One account read now (webhooks), with all its subscriptions; None when it is gone."""
        account = self.read_account(account_id)
        if not account or account.get("deleted") is True or is_deleted(account):
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
    def delivery_records(cls, connector: Rereader, delivery: WebhookDelivery) -> list[SourceCustomerRecord]:
        """The accounts a notification affects, read again now; one that reads back closed (inactive with
        ``deleted_at``) joins the delivery's deletions.

        The account as it reads now decides, not the notification's event: Recurly may deliver a closed-
        account notification late, after the account was reopened, and says to check the account first.
        """
        records: list[SourceCustomerRecord] = []
        for account_id in dict.fromkeys(delivery.customer_ids + cls.customers_of(connector, delivery.lookups)):
            record = connector.fetch_record(account_id)
            if record is not None:
                records.append(record)
                continue
            # Not a record: closed (asked once more, which only a closed or missing account costs), or gone.
            account = cast(RecurlyConnector, connector).read_account(account_id)
            if account and (account.get("deleted") is True or is_deleted(account)):
                delivery.deleted.append(account_key(account))
        return records

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
