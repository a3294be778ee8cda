"""GoCardless: customers, mandates, subscriptions and payments → source customer records.

Reads top to bottom: constants, the per-integration rule (docs/connectors.md), the mapping of payloads to
records, then how the API is paged and synced.

The rule: only customers with a payment become records, except on a full re-sync (all customers);
the lead created date is the customer ``created_at``; GoCardless has no trials, so no trial date is
ever set; subscriber since is the first collected (``confirmed``/``paid_out``) non-zero payment that
belongs to a subscription (one-off payments are not recurring revenue).

GoCardless links objects one way: a payment names its mandate (and subscription), a subscription
names its mandate, a mandate names its customer. So the sync indexes mandates → customer first, then
groups subscriptions and payments by customer, then maps each page of customers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from connectors.base import Batch, Connector, Feed, Setting, Stream
from connectors.http import ApiError, HttpClient
from connectors.paging import AfterCursorPaginator, Page, PageRequest, fetch_pages
from connectors.push import (
    Rereader,
    WebhookContext,
    WebhookDelivery,
    WebhookReceiver,
    json_body,
    object_id,
    require_object,
)
from connectors.signatures import WebhookPayloadError, verify_gocardless_signature
from funnelsync.normalize import clean_text
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from funnelsync.timeutil import UTC, account_timezone, parse_iso

BASE_URL = "https://api.gocardless.com"
SANDBOX_BASE_URL = "https://api-sandbox.gocardless.com"
API_VERSION = "2015-07-06"
PAGE_LIMIT = 500  # the API maximum; the default of 50 would cost ten times the requests

# A payment in these states has been collected from the payer (GoCardless "payment statuses").
COLLECTED_PAYMENT_STATUSES = frozenset({"confirmed", "paid_out"})
# Collection failed after submission: the subscription is behind on its payments.
FAILED_PAYMENT_STATUSES = frozenset({"failed", "charged_back"})
# Subscription status → our subscription state. GoCardless has no past-due status (derived from
# payments below) and no trial; a subscription awaiting approval or paused is still a live one.
SUBSCRIPTION_STATES = {
    "pending_customer_approval": "active",
    "active": "active",
    "paused": "active",
    "finished": "cancelled",
    "cancelled": "cancelled",
    "customer_approval_denied": "cancelled",
}


@dataclass(slots=True)
class CustomerActivity:
    """What the mandates, subscriptions and payments of one customer say (built per sync)."""

    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    payments: list[dict[str, Any]] = field(default_factory=list)


def should_import(activity: CustomerActivity | None, *, full_refresh: bool) -> bool:
    """The rule: a customer becomes a record when it has a payment, or on a full re-sync."""
    return full_refresh or bool(activity and activity.payments)


def charge_moment(payment: Mapping[str, Any], tz: ZoneInfo) -> datetime | None:
    """When a payment was collected: its ``charge_date`` (a date) at midnight in the account zone.

    ``charge_date`` is the day GoCardless collects from the payer; a date without a zone is read in
    the account time zone. Without one we fall back to ``created_at``.
    """
    raw = payment.get("charge_date")
    if raw:
        return datetime.combine(date.fromisoformat(raw), time.min, tzinfo=tz).astimezone(UTC)
    return parse_iso(payment.get("created_at"))


def _amount(payment: Mapping[str, Any]) -> int:
    # Minor units (pence, cents); a refunded payment still counts as a charge that happened.
    try:
        return int(payment.get("amount") or 0)
    except (TypeError, ValueError):
        return 0


def first_paid_at(payments: Iterable[Mapping[str, Any]], tz: ZoneInfo) -> datetime | None:
    """The earliest collected, non-zero payment among ``payments`` (None when none was collected)."""
    moments = [
        moment
        for p in payments
        if p.get("status") in COLLECTED_PAYMENT_STATUSES and _amount(p) > 0
        for moment in [charge_moment(p, tz)]
        if moment is not None
    ]
    return min(moments) if moments else None


def map_subscription(
    subscription: Mapping[str, Any], payments: Iterable[Mapping[str, Any]], tz: ZoneInfo
) -> SubscriptionFact:
    """One GoCardless subscription and its payments → a subscription fact (never with trial dates).

    An active subscription whose latest payment failed or was charged back is past due.
    """
    own = [p for p in payments if (p.get("links") or {}).get("subscription") == subscription["id"]]
    state = SUBSCRIPTION_STATES.get(str(subscription.get("status")), "active")
    if state == "active" and own:
        latest = max(own, key=_payment_order)
        if latest.get("status") in FAILED_PAYMENT_STATUSES:
            state = "past_due"
    cancelled_at = None
    if state == "cancelled":
        # GoCardless reports no cancellation time on the object; end_date (a date) is the best it says.
        end = subscription.get("end_date")
        cancelled_at = (
            datetime.combine(date.fromisoformat(end), time.min, tzinfo=tz).astimezone(UTC) if end else None
        )
    return SubscriptionFact(
        external_id=str(subscription["id"]),
        state=state,
        first_paid_at=first_paid_at(own, tz),
        cancelled_at=cancelled_at,
    )


def customer_name(customer: Mapping[str, Any]) -> str | None:
    """``given_name family_name``, else the company name (GoCardless requires one of the two)."""
    person = " ".join(
        part
        for part in (clean_text(customer.get("given_name")), clean_text(customer.get("family_name")))
        if part
    )
    return person or clean_text(customer.get("company_name"))


def _country(value: Any) -> str | None:
    code = clean_text(value)
    return code.upper() if code and len(code) == 2 and code.isalpha() else None


def map_customer(
    customer: Mapping[str, Any], activity: CustomerActivity | None, tz: ZoneInfo | None = None
) -> SourceCustomerRecord:
    """A GoCardless customer (with its subscriptions and payments) → a source customer record.

    Args:
        customer: an item of ``GET /customers`` (fields ``id``, ``email``, ``given_name``, …).
        activity: its subscriptions and payments, or None when it has none.
        tz: the account time zone (default: ``account_timezone()``), for ``charge_date`` days.
    """
    tz = tz or account_timezone()
    activity = activity or CustomerActivity()
    return SourceCustomerRecord(
        external_id=str(customer["id"]),
        name=customer_name(customer),
        email=clean_text(customer.get("email")),
        company=clean_text(customer.get("company_name")),
        country=_country(customer.get("country_code")),
        state=clean_text(customer.get("region")),
        city=clean_text(customer.get("city")),
        zip=clean_text(customer.get("postal_code")),
        lead_created_at=parse_iso(customer.get("created_at")),
        free_trial_started_at=None,  # GoCardless has no trials: never approximate one
        subscriptions=[map_subscription(s, activity.payments, tz) for s in activity.subscriptions],
        custom={k: v for k, v in (customer.get("metadata") or {}).items() if v not in (None, "")},
        raw=dict(customer),
    )


def index_activity(
    mandates: Iterable[Mapping[str, Any]],
    subscriptions: Iterable[Mapping[str, Any]],
    payments: Iterable[Mapping[str, Any]],
) -> dict[str, CustomerActivity]:
    """Group subscriptions and payments by customer id through their mandates.

    Payments stream through: per customer only the ones the mapping can use are kept (per
    subscription the earliest collected non-zero payment and the latest payment; otherwise one
    marker that the customer has a payment), so memory grows with subscriptions, not with years of
    monthly payments. Nothing of it is persisted (the sync cursor stays a single value).
    """
    customer_of_mandate = {
        str(m["id"]): str((m.get("links") or {}).get("customer")) for m in mandates if m.get("links")
    }
    by_customer: dict[str, CustomerActivity] = {}
    for subscription in subscriptions:
        owner = customer_of_mandate.get(str((subscription.get("links") or {}).get("mandate")))
        if owner:
            by_customer.setdefault(owner, CustomerActivity()).subscriptions.append(dict(subscription))
    kept: dict[tuple[str, str | None], dict[str, dict[str, Any]]] = {}
    for payment in payments:
        owner = customer_of_mandate.get(str((payment.get("links") or {}).get("mandate")))
        if not owner:
            continue
        slim = _slim_payment(payment)
        slot = kept.setdefault((owner, slim["links"]["subscription"]), {})
        if "latest" not in slot or _payment_order(slim) > _payment_order(slot["latest"]):
            slot["latest"] = slim
        if slim["status"] in COLLECTED_PAYMENT_STATUSES and _amount(slim) > 0:
            first = slot.get("first_collected")
            if first is None or _payment_order(slim) < _payment_order(first):
                slot["first_collected"] = slim
    for (owner, _), slot in kept.items():
        activity = by_customer.setdefault(owner, CustomerActivity())
        activity.payments.extend({id(p): p for p in slot.values()}.values())
    return by_customer


def _payment_order(payment: Mapping[str, Any]) -> tuple[str, str]:
    return (str(payment.get("charge_date") or ""), str(payment.get("created_at") or ""))


def _slim_payment(payment: Mapping[str, Any]) -> dict[str, Any]:
    # Only what the mapping reads: a full sync may hold many payments at once.
    links = payment.get("links") or {}
    return {
        "id": payment.get("id"),
        "status": payment.get("status"),
        "amount": payment.get("amount"),
        "charge_date": payment.get("charge_date"),
        "created_at": payment.get("created_at"),
        "links": {"subscription": links.get("subscription"), "mandate": links.get("mandate")},
    }


# --- Paging and syncing ---------------------------------------------------------------------------

LOOKBACK = timedelta(minutes=5)  # events are written asynchronously; re-read a little behind the cursor


class GoCardlessConnector(Connector, WebhookReceiver):
    """Pull customers with their mandates, subscriptions and payments from the GoCardless API.

    Stream ``customers`` (key ``id``, cursor: the last applied event's ``created_at``):

    * full refresh, or first run: list mandates, subscriptions and payments (``limit=500``, ``after``
      cursor), group them by customer, then list customers page by page; each page is one batch whose
      cursor carries the ``after`` token, so a killed run resumes at the next page. A full refresh
      imports every customer; a first incremental run only those with a payment (the rule).
    * incremental: ``GET /events?created_at[gt]=<cursor>`` gives what changed; the customers those
      events touch are re-read with their mandates, subscriptions and payments.
    """

    kind = "gocardless"
    title = "GoCardless"
    feeds = frozenset({Feed.PULLED, Feed.PUSHED})
    settings_schema = (
        Setting(
            "access_token", secret=True, required=True, help="GoCardless access token (read-only is enough)"
        ),
        Setting("base_url", default=BASE_URL, help=f"API endpoint; sandbox: {SANDBOX_BASE_URL}"),
        Setting("page_size", default=PAGE_LIMIT, cast=int, help="items per page (1-500)"),
        Setting("webhook_secret", secret=True, help="webhook endpoint secret (Webhook-Signature)"),
    )
    streams = (Stream(name="customers", key="id", cursor_field="created_at", reader="read_customers"),)

    max_page_size = PAGE_LIMIT

    def client_options(self) -> dict[str, Any]:
        token = str(self.settings["access_token"])
        return {
            "headers": {
                "Authorization": f"Bearer {token}",
                "GoCardless-Version": API_VERSION,
                "Accept": "application/json",
            },
            "secrets": [token],
            "credentials_hint": "check the access_token setting (live vs sandbox base_url?)",
        }

    # -- reading ----------------------------------------------------------------------------------

    def _list(self, resource: str, params: Mapping[str, Any] | None = None) -> Iterator[Page]:
        request = PageRequest(f"/{resource}", params={"limit": self.page_size, **(params or {})})
        return fetch_pages(self.client, request, AfterCursorPaginator(resource))

    def _list_all(self, resource: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return list(self._iter_all(resource, params))

    def _iter_all(self, resource: str, params: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        for page in self._list(resource, params):
            yield from page.items

    def read_customers(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """The reader of stream ``customers`` (see the class docstring).

        State: ``since`` (the events cursor, None before the first listing finished), ``page_token``
        (the ``after`` of an interrupted listing), ``watermark`` and, while listing, ``include_all``.
        """
        if state.get("since") and not state.get("page_token"):
            yield from self._read_changes(state)
        else:
            yield from self._read_listing(state, full_refresh)

    def _read_listing(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        tz = account_timezone()
        # A resumed listing keeps the mode it started in (a killed full refresh stays a full refresh).
        include_all = bool(state.get("include_all", full_refresh))
        # Changes made while we list are picked up by the next incremental run from this moment.
        watermark = state.get("watermark") or _iso(self.started_at - LOOKBACK)
        activity = index_activity(
            self._list_all("mandates"), self._iter_all("subscriptions"), self._iter_all("payments")
        )
        request = PageRequest("/customers", params={"limit": self.page_size})
        pages = fetch_pages(
            self.client, request, AfterCursorPaginator("customers"), start_token=state.get("page_token")
        )

        def records_of(customers: list[dict[str, Any]]) -> list[SourceCustomerRecord]:
            return [
                map_customer(c, activity.get(str(c["id"])), tz)
                for c in customers
                if should_import(activity.get(str(c["id"])), full_refresh=include_all)
            ]

        yield from self.read_pages(
            "customers",
            pages,
            records_of,
            lambda page: self.cursor_after(page, state.get("since"), watermark, include_all=include_all),
        )

    def _read_changes(self, state: dict[str, Any]) -> Iterator[Batch]:
        tz = account_timezone()
        since = str(state["since"])
        events = self._list_all("events", {"created_at[gt]": since})
        # The API lists newest first; applying oldest first lets each batch's cursor be a safe resume point.
        events.sort(key=lambda e: (str(e.get("created_at")), str(e.get("id"))))
        resolver = CustomerResolver(self.client)
        chunk = max(1, min(self.batch_size, self.page_size))
        for start in range(0, len(events), chunk):
            part = events[start : start + chunk]
            customer_ids: dict[str, None] = {}
            for event in part:
                owner = resolver.customer_of_event(event)
                if owner:
                    customer_ids[owner] = None
            records = []
            for customer_id in customer_ids:
                customer, activity = self.fetch_customer(customer_id)
                if customer is not None and should_import(activity, full_refresh=False):
                    records.append(map_customer(customer, activity, tz))
            reached = str(part[-1]["created_at"])
            yield Batch("customers", records, {"since": reached, "watermark": reached}, len(part))

    def fetch_customer(self, customer_id: str) -> tuple[dict[str, Any] | None, CustomerActivity]:
        """Re-read one customer with its mandates, subscriptions and payments (webhooks, incremental).

        Returns ``(None, empty)`` when the customer was removed (HTTP 404/410).
        """
        try:
            customer = self.client.get_json(f"/customers/{customer_id}")["customers"]
        except ApiError as exc:
            if exc.status in (404, 410):
                return None, CustomerActivity()
            raise
        mandates = self._list_all("mandates", {"customer": customer_id})
        activity = index_activity(
            mandates,
            self._list_all("subscriptions", {"customer": customer_id}),
            self._list_all("payments", {"customer": customer_id}),
        ).get(customer_id, CustomerActivity())
        return customer, activity

    def fetch_record(self, customer_id: str, *, full_refresh: bool = False) -> SourceCustomerRecord | None:
        """The record of one customer now, or None when the rule excludes it (or it is gone)."""
        customer, activity = self.fetch_customer(customer_id)
        if customer is None or not should_import(activity, full_refresh=full_refresh):
            return None
        return map_customer(customer, activity)

    # -- webhooks ---------------------------------------------------------------------------------

    @classmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """Events signed with ``Webhook-Signature``: each names a customer, or a resource leading to one."""
        verify_gocardless_signature(body, headers.get("webhook-signature"), str(settings.get("webhook_secret") or ""))
        payload = require_object(json_body(body, "GoCardless"), "GoCardless webhook")
        events = payload.get("events")
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise WebhookPayloadError("GoCardless webhook lacks an events list")
        delivery = WebhookDelivery([f"{e.get('resource_type')}.{e.get('action')}" for e in events])
        for event in events:
            links = event.get("links") or {}
            if not isinstance(links, dict):
                raise WebhookPayloadError(f"GoCardless event links must be an object, got {type(links).__name__}")
            for resource in ("customer", "mandate", "payment", "subscription"):
                link = object_id(links.get(resource), f"GoCardless event links.{resource}")
                if link:
                    delivery.lookups.append((resource, link))
                    break
        return delivery

    @classmethod
    def customers_of(cls, connector: Rereader, lookups: list[tuple[str, str]]) -> list[str]:
        """The customers the events' links lead to (payment → mandate → customer)."""
        resolver = CustomerResolver(connector.client)
        found: list[str] = []
        for object_type, item_id in lookups:
            owner = resolver.customer_of_event({"links": {object_type: item_id}})
            if owner:
                found.append(owner)
        return found


class CustomerResolver:
    """Finds the customer an event is about, following payment → mandate → customer links (cached)."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client
        self.mandate_owner: dict[str, str | None] = {}
        self.via_mandate: dict[tuple[str, str], str | None] = {}

    def _get(self, resource: str, item_id: str) -> dict[str, Any] | None:
        try:
            return self.client.get_json(f"/{resource}/{item_id}")[resource]
        except ApiError as exc:
            if exc.status in (404, 410):
                return None
            raise

    def customer_of_mandate(self, mandate_id: str) -> str | None:
        if mandate_id not in self.mandate_owner:
            mandate = self._get("mandates", mandate_id)
            self.mandate_owner[mandate_id] = ((mandate or {}).get("links") or {}).get("customer")
        return self.mandate_owner[mandate_id]

    def _mandate_of(self, resource: str, item_id: str) -> str | None:
        key = (resource, item_id)
        if key not in self.via_mandate:
            item = self._get(resource, item_id)
            self.via_mandate[key] = ((item or {}).get("links") or {}).get("mandate")
        return self.via_mandate[key]

    def customer_of_event(self, event: Mapping[str, Any]) -> str | None:
        links = event.get("links") or {}
        if links.get("customer"):
            return str(links["customer"])
        mandate = links.get("mandate")
        if not mandate and links.get("payment"):
            mandate = self._mandate_of("payments", str(links["payment"]))
        if not mandate and links.get("subscription"):
            mandate = self._mandate_of("subscriptions", str(links["subscription"]))
        return self.customer_of_mandate(str(mandate)) if mandate else None


def _iso(moment: datetime) -> str:
    # GoCardless compares created_at as ISO 8601 with milliseconds and Z.
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
