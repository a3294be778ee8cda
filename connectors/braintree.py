"""Braintree: customers (GraphQL) and subscriptions (XML gateway) → source customer records.

Reads top to bottom: constants, the per-integration rule (docs/connectors.md), the mapping of payloads to
records, then how the two APIs are paged and synced.

The rule: the first import brings every customer (leads included); later (incremental) runs only
customers with a subscription or a transaction. The lead created date is the first billing date minus
the trial duration, computed in the ACCOUNT time zone: Braintree dates (``first_billing_date``) are
calendar days of the merchant, so a day is read as midnight in that zone, then converted to UTC. A
customer without subscriptions falls back to its ``createdAt``. The trial start is the subscription's
``created_at`` when ``trial_period`` is true; the trial ends on ``first_billing_date``.

Subscriber since (our choice, documented in docs/connectors.md): the earliest ``created_at`` of a
subscription transaction of type ``sale`` with a non-zero amount in a successful status
(``submitted_for_settlement``, ``settling``, ``settlement_pending``, ``settlement_confirmed``,
``settled``). When the subscription object carries no transactions (some webhook subjects), a
subscription that has completed a billing cycle (``current_billing_cycle`` ≥ 1) at a non-zero price
and is Active counts as paid on its ``first_billing_date``.

Braintree subscriptions name their ``payment_method_token``, not their customer; customers list their
payment methods (GraphQL ``paymentMethods { legacyId }``, the token), which is how the two are joined.
"""

from __future__ import annotations

import calendar
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, cast
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from connectors.base import Batch, Connector, Feed, Setting, Stream
from connectors.http import ApiError, CredentialsError, HttpClient, graphql_resource_limited
from connectors.paging import GraphQLCursorPaginator, Page, PageRequest, fetch_pages, id_batches
from connectors.push import Rereader, WebhookContext, WebhookDelivery, WebhookReceiver
from connectors.signatures import (
    WebhookPayloadError,
    braintree_challenge_response,
    parse_braintree_notification,
    verify_braintree_signature,
    xml_to_dict,
)
from funnelsync.normalize import clean_text
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from funnelsync.timeutil import UTC, account_timezone, parse_iso

GRAPHQL_URL = "https://payments.braintree-api.com/graphql"
SANDBOX_GRAPHQL_URL = "https://payments.sandbox.braintree-api.com/graphql"
GATEWAY_URL = "https://api.braintreegateway.com"
SANDBOX_GATEWAY_URL = "https://api.sandbox.braintreegateway.com"
GRAPHQL_VERSION = "2019-01-01"
XML_API_VERSION = "6"
CUSTOMER_PAGE_SIZE = 50
SUBSCRIPTION_BATCH_SIZE = 50  # the gateway's page_size; the ids response says the real one

SUCCESSFUL_TRANSACTION_STATUSES = frozenset(
    {"submitted_for_settlement", "settling", "settlement_pending", "settlement_confirmed", "settled"}
)
SUBSCRIPTION_STATES = {
    "Active": "active",
    "Pending": "active",
    "Past Due": "past_due",
    "Canceled": "cancelled",
    "Expired": "cancelled",
}


def day_start(day: date, tz: ZoneInfo) -> datetime:
    """Midnight of a merchant calendar day in ``tz``, as aware UTC."""
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def minus_months(day: date, months: int) -> date:
    """``day`` moved back by whole months, clamped to the month's last day (31 March - 1 → 28/29 Feb)."""
    index = day.year * 12 + (day.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def trial_start_day(first_billing: date, duration: int | None, unit: str | None) -> date:
    """First billing date minus the trial duration (``day`` or ``month`` units)."""
    if not duration:
        return first_billing
    if (unit or "day").lower().startswith("month"):
        return minus_months(first_billing, int(duration))
    return first_billing - timedelta(days=int(duration))


def _date(value: Any) -> date | None:
    if not value:
        return None
    return date.fromisoformat(str(value)[:10])


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value)) if value not in (None, "") else Decimal(0)
    except InvalidOperation:
        return Decimal(0)


def subscription_lead_created_at(subscription: Mapping[str, Any], tz: ZoneInfo) -> datetime | None:
    """The lead date a subscription implies: first billing date minus trial, midnight in ``tz``."""
    first_billing = _date(subscription.get("first_billing_date"))
    if first_billing is None:
        return None
    duration = subscription.get("trial_duration") if subscription.get("trial_period") else None
    return day_start(trial_start_day(first_billing, duration, subscription.get("trial_duration_unit")), tz)


def subscription_first_paid_at(subscription: Mapping[str, Any], tz: ZoneInfo) -> datetime | None:
    """The first successful, non-zero sale of a subscription (see the module docstring for the rule)."""
    transactions = subscription.get("transactions")
    if transactions:
        moments = [
            parse_iso(t.get("created_at"))
            for t in transactions
            if isinstance(t, Mapping)
            and t.get("status") in SUCCESSFUL_TRANSACTION_STATUSES
            and (t.get("type") or "sale") == "sale"
            and _decimal(t.get("amount")) > 0
        ]
        found = [m for m in moments if m is not None]
        return min(found) if found else None
    cycle = subscription.get("current_billing_cycle")
    first_billing = _date(subscription.get("first_billing_date"))
    if (
        subscription.get("status") in ("Active", "Past Due", "Canceled", "Expired")
        and isinstance(cycle, int)
        and cycle >= 1
        and _decimal(subscription.get("price")) > 0
        and first_billing is not None
        and transactions is None
    ):
        return day_start(first_billing, tz)
    return None


def _cancelled_at(subscription: Mapping[str, Any]) -> datetime | None:
    history = subscription.get("status_history") or []
    moments = [
        parse_iso(event.get("timestamp"))
        for event in history
        if isinstance(event, Mapping) and event.get("status") in ("Canceled", "Expired")
    ]
    found = [m for m in moments if m is not None]
    if found:
        return min(found)
    return parse_iso(subscription.get("updated_at"))


def map_subscription(subscription: Mapping[str, Any], tz: ZoneInfo) -> SubscriptionFact:
    """A Braintree subscription (XML turned dict, underscored names) → a subscription fact.

    An Active subscription in its trial period that has not been charged yet is ``trialing``.
    """
    first_paid = subscription_first_paid_at(subscription, tz)
    state = SUBSCRIPTION_STATES.get(str(subscription.get("status")), "active")
    in_trial = bool(subscription.get("trial_period"))
    if state == "active" and in_trial and first_paid is None:
        state = "trialing"
    first_billing = _date(subscription.get("first_billing_date"))
    return SubscriptionFact(
        external_id=str(subscription["id"]),
        state=state,
        trial_started_at=parse_iso(subscription.get("created_at")) if in_trial else None,
        trial_ended_at=day_start(first_billing, tz) if in_trial and first_billing else None,
        first_paid_at=first_paid,
        cancelled_at=_cancelled_at(subscription) if state == "cancelled" else None,
    )


def payment_method_tokens(customer: Mapping[str, Any]) -> list[str]:
    """The payment-method tokens (GraphQL ``legacyId``) of a GraphQL customer node."""
    edges = ((customer.get("paymentMethods") or {}).get("edges")) or []
    return [str(e["node"]["legacyId"]) for e in edges if e and e.get("node") and e["node"].get("legacyId")]


def has_transaction(customer: Mapping[str, Any]) -> bool:
    """True when the GraphQL customer node lists at least one transaction."""
    return bool(((customer.get("transactions") or {}).get("edges")) or [])


def should_import(customer: Mapping[str, Any], subscriptions: list[Any], *, first_import: bool) -> bool:
    """The rule: every customer on the first import; later only those with a subscription or transaction."""
    return first_import or bool(subscriptions) or has_transaction(customer)


def map_customer(
    customer: Mapping[str, Any],
    subscriptions: Iterable[Mapping[str, Any]],
    tz: ZoneInfo | None = None,
) -> SourceCustomerRecord:
    """A GraphQL customer node and its XML subscriptions → a source customer record.

    Args:
        customer: ``search.customers`` node (``legacyId``, ``email``, ``firstName``, ``createdAt``, …).
        subscriptions: the customer's subscriptions as dicts (``connectors.signatures.xml_to_dict``).
        tz: the account time zone (default ``account_timezone()``).
    """
    tz = tz or account_timezone()
    subs = list(subscriptions)
    lead_dates = [d for s in subs for d in [subscription_lead_created_at(s, tz)] if d is not None]
    facts = [map_subscription(s, tz) for s in subs]
    trial_starts = [f.trial_started_at for f in facts if f.trial_started_at is not None]
    name = " ".join(
        p for p in (clean_text(customer.get("firstName")), clean_text(customer.get("lastName"))) if p
    )
    return SourceCustomerRecord(
        # legacyId is the id merchants see and the XML API and webhooks use; `id` is a GraphQL global id.
        external_id=str(customer.get("legacyId") or customer["id"]),
        name=name or clean_text(customer.get("company")),
        email=clean_text(customer.get("email")),
        company=clean_text(customer.get("company")),
        website_url=clean_text(customer.get("website")),
        lead_created_at=min(lead_dates) if lead_dates else parse_iso(customer.get("createdAt")),
        free_trial_started_at=min(trial_starts) if trial_starts else None,
        subscriptions=facts,
        raw=dict(customer),
    )


def xml_customer_node(customer: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An XML gateway customer (``GET /customers/{id}``, as a dict) → (GraphQL-shaped node, subscriptions).

    The XML customer nests its payment methods by type (``credit_cards``, ``paypal_accounts``,
    ``venmo_accounts``, …), each with its ``subscriptions``; every list of dicts carrying a ``token``
    is a payment-method list, so new payment types need no code change.
    """
    tokens: list[str] = []
    subscriptions: list[dict[str, Any]] = []
    for value in customer.values():
        if isinstance(value, list):
            for method in value:
                if isinstance(method, Mapping) and method.get("token"):
                    tokens.append(str(method["token"]))
                    subscriptions.extend(
                        s for s in (method.get("subscriptions") or []) if isinstance(s, dict)
                    )
    node = {
        "id": customer.get("id"),
        "legacyId": customer.get("id"),
        "email": customer.get("email"),
        "firstName": customer.get("first_name"),
        "lastName": customer.get("last_name"),
        "company": customer.get("company"),
        "website": customer.get("website"),
        "createdAt": customer.get("created_at"),
        "paymentMethods": {"edges": [{"node": {"legacyId": t}} for t in tokens]},
    }
    return node, subscriptions


# --- Paging and syncing ---------------------------------------------------------------------------

LOOKBACK = timedelta(minutes=5)  # Braintree search indexes settle asynchronously: re-read a little

CUSTOMERS_QUERY = """
query SearchCustomers($input: CustomerSearchInput!, $first: Int!, $after: String) {
  search {
    customers(input: $input, first: $first, after: $after) {
      pageInfo { hasNextPage endCursor }
      edges {
        node {
          id legacyId email firstName lastName company website createdAt
          paymentMethods(first: 50) { edges { node { legacyId } } }
          transactions(first: 1) { edges { node { id } } }
        }
      }
    }
  }
}
""".strip()
CUSTOMERS_CONNECTION = ("data", "search", "customers")
CREDENTIAL_ERROR_CLASSES = frozenset({"AUTHENTICATION", "AUTHORIZATION"})


def graphql_errors(body: Any) -> list[dict[str, Any]]:
    """The ``errors`` of a GraphQL body (Braintree answers HTTP 200 with them)."""
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _search_xml(criteria: Mapping[str, Any]) -> bytes:
    """``<search>`` criteria in the gateway's XML (ranges as ``<min>``/``<max>``, lists as arrays)."""
    root = ET.Element("search")
    for name, value in criteria.items():
        element = ET.SubElement(root, name.replace("_", "-"))
        if isinstance(value, list):
            element.set("type", "array")
            for item in value:
                ET.SubElement(element, "item").text = str(item)
        elif isinstance(value, Mapping):
            for bound, moment in value.items():
                child = ET.SubElement(element, bound)
                child.set("type", "datetime")
                child.text = str(moment)
        else:
            element.text = str(value)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


class BraintreeConnector(Connector, WebhookReceiver):
    """Pull Braintree customers (GraphQL) and their subscriptions (XML gateway).

    Stream ``customers`` (key ``legacyId``, cursor ``createdAt``; state ``since``/``page_token``/``watermark``):

    * first import (no saved cursor) or full refresh: every subscription (``advanced_search_ids``,
      then ``advanced_search`` in batches of the gateway's ``page_size``), indexed by payment-method
      token; then every customer via GraphQL ``search.customers`` (``first``/``after`` endCursor), one
      batch per page, joined to its subscriptions. All customers become records (the rule).
    * incremental: customers created since the cursor (GraphQL ``createdAt`` filter), plus the
      owners of subscriptions and transactions created since the cursor (XML searches), each re-read
      in full (``GET /customers/{id}``, which nests payment methods and subscriptions); only those
      with a subscription or a transaction become records (the rule). Braintree has no "updated
      since" search, so each incremental run also re-reads the subscriptions stored as not ended
      (``known_subscriptions``, handed over by the sync) with ``advanced_search`` in id batches of the
      gateway's page size (one request per 50); the owners of those whose state moved (cancelled,
      expired, past due, paid) are re-read. A run costs about a request per 50 open subscriptions more.
    """

    kind = "braintree"
    title = "Braintree"
    feeds = frozenset({Feed.PULLED, Feed.PUSHED})
    challenge_param = "bt_challenge"
    settings_schema = (
        Setting("merchant_id", required=True, help="Braintree merchant id"),
        Setting("public_key", required=True, help="API public key"),
        Setting("private_key", secret=True, required=True, help="API private key"),
        Setting("base_url", default=GRAPHQL_URL, help=f"GraphQL endpoint; sandbox: {SANDBOX_GRAPHQL_URL}"),
        Setting("gateway_url", default=GATEWAY_URL, help=f"XML gateway; sandbox: {SANDBOX_GATEWAY_URL}"),
        Setting("page_size", default=CUSTOMER_PAGE_SIZE, cast=int, help="customers per GraphQL page (1-50)"),
    )
    streams = (Stream(name="customers", key="legacyId", cursor_field="createdAt", reader="read_customers"),)
    reconciles_subscriptions = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gateway: HttpClient | None = None

    def _client_for(
        self, base_url: str, headers: dict[str, str], retryable_body: Any = None, url_setting: str = "base_url"
    ) -> HttpClient:
        public, private = str(self.settings["public_key"]), str(self.settings["private_key"])
        return self.http_client(
            base_url,
            headers=headers,
            auth=(public, private),
            secrets=[private],
            credentials_hint="check public_key, private_key and merchant_id (sandbox keys need the sandbox URLs)",
            url_setting=url_setting,
            retryable_body=retryable_body,
        )

    def make_client(self) -> HttpClient:
        """The GraphQL client; a RESOURCE_LIMIT error in a 200 body is retried like a 429."""
        headers = {"Braintree-Version": GRAPHQL_VERSION, "Content-Type": "application/json"}
        return self._client_for(self.graphql_url, headers, graphql_resource_limited)

    @property
    def graphql_url(self) -> str:
        return str(self.settings["base_url"]).rstrip("/")

    @property
    def gateway(self) -> HttpClient:
        """The XML gateway client (subscriptions, customer look-ups)."""
        if self._gateway is None:
            headers = {
                "X-ApiVersion": XML_API_VERSION,
                "Accept": "application/xml",
                "Content-Type": "application/xml",
            }
            self._gateway = self._client_for(str(self.settings["gateway_url"]), headers, url_setting="gateway_url")
        return self._gateway

    def forget_clients(self) -> None:
        super().forget_clients()
        self._gateway = None

    def close(self) -> None:
        super().close()
        if self._gateway is not None:
            self._gateway.close()
            self._gateway = None

    max_page_size = CUSTOMER_PAGE_SIZE

    def _merchant_path(self, path: str) -> str:
        return f"/merchants/{self.settings['merchant_id']}{path}"

    # -- GraphQL ----------------------------------------------------------------------------------

    def _check_graphql(self, body: Any) -> Any:
        errors = graphql_errors(body)
        if not errors:
            return body
        classes = {str((e.get("extensions") or {}).get("errorClass")) for e in errors}
        message = "; ".join(str(e.get("message", "")) for e in errors)[:300]
        if classes & CREDENTIAL_ERROR_CLASSES:
            raise CredentialsError(
                f"{self.source_name}: Braintree GraphQL refused the credentials ({', '.join(sorted(classes))}): "
                "check public_key and private_key (sandbox keys need the sandbox base_url)"
            )
        raise ApiError(
            f"{self.source_name}: Braintree GraphQL error ({', '.join(sorted(classes))}): {message}"
        )

    def customer_pages(
        self, search_input: Mapping[str, Any], start_token: str | None = None
    ) -> Iterator[Page]:
        """Pages of GraphQL ``search.customers`` (nodes as items), resuming at ``start_token``."""
        request = PageRequest(
            self.graphql_url,
            method="POST",
            json_body={
                "query": CUSTOMERS_QUERY,
                "variables": {"input": dict(search_input), "first": self.page_size},
            },
        )
        for page in fetch_pages(
            self.client, request, GraphQLCursorPaginator(CUSTOMERS_CONNECTION), start_token=start_token
        ):
            self._check_graphql(page.body)
            yield page

    # -- XML gateway ------------------------------------------------------------------------------

    def _post_xml(self, path: str, body: bytes) -> ET.Element:
        response = self.gateway.request("POST", self._merchant_path(path), content=body)
        return _parse_xml(response.content, path, self.source_name)

    def _get_xml(self, path: str) -> ET.Element | None:
        try:
            response = self.gateway.request("GET", self._merchant_path(path))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return _parse_xml(response.content, path, self.source_name)

    def search_ids(self, resource: str, criteria: Mapping[str, Any]) -> tuple[list[str], int]:
        """``POST /{resource}/advanced_search_ids``: every matching id and the gateway's page size."""
        root = self._post_xml(f"/{resource}/advanced_search_ids", _search_xml(criteria))
        page_size = int(root.findtext("page-size") or SUBSCRIPTION_BATCH_SIZE)
        ids_el = root.find("ids")
        ids = [(item.text or "").strip() for item in (ids_el if ids_el is not None else [])]
        return [i for i in ids if i], max(1, page_size)

    def fetch_by_ids(self, resource: str, ids: list[str], page_size: int) -> Iterator[list[dict[str, Any]]]:
        """``POST /{resource}/advanced_search`` in id batches of ``page_size`` (the SDK's ResourceCollection)."""
        for batch in id_batches(ids, page_size):
            root = self._post_xml(f"/{resource}/advanced_search", _search_xml({"ids": batch}))
            items = xml_to_dict(root)
            yield [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    def subscriptions_by_token(self, criteria: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Every subscription matching ``criteria``, grouped by payment-method token."""
        ids, page_size = self.search_ids("subscriptions", criteria)
        grouped: dict[str, list[dict[str, Any]]] = {}
        for batch in self.fetch_by_ids("subscriptions", ids, page_size):
            for subscription in batch:
                grouped.setdefault(str(subscription.get("payment_method_token")), []).append(subscription)
        return grouped

    def find_customer(self, customer_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """``GET /customers/{id}``: the node shape and all its subscriptions, or None when it is gone."""
        root = self._get_xml(f"/customers/{quote(customer_id, safe='')}")
        if root is None:
            return None
        value = xml_to_dict(root)
        return xml_customer_node(value) if isinstance(value, dict) else None

    def customer_of_token(self, token: str) -> str | None:
        """The customer id owning a payment-method token (``GET /payment_methods/any/{token}``)."""
        root = self._get_xml(f"/payment_methods/any/{quote(token, safe='')}")
        return (root.findtext("customer-id") or "").strip() or None if root is not None else None

    def fetch_record(self, customer_id: str, *, first_import: bool = False) -> SourceCustomerRecord | None:
        """The record of one customer now (webhooks), or None when it is gone or the rule excludes it."""
        found = self.find_customer(customer_id)
        if found is None:
            return None
        node, subscriptions = found
        return map_customer(node, subscriptions) if first_import or subscriptions else None

    # -- webhooks ---------------------------------------------------------------------------------

    @classmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """A form post of ``bt_signature`` and ``bt_payload``: the customer its subject names is read again."""
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        except UnicodeDecodeError:
            raise WebhookPayloadError("Braintree webhook body is not form-encoded text") from None
        signature = next(iter(form.get("bt_signature") or []), None)
        payload = next(iter(form.get("bt_payload") or []), None)
        verify_braintree_signature(
            signature, payload, str(settings.get("public_key") or ""), str(settings.get("private_key") or "")
        )
        assert payload is not None  # verified above
        note = parse_braintree_notification(payload)
        delivery = WebhookDelivery([note.kind])
        subject = note.subject
        if note.subject_type == "subscription":
            for transaction in subject.get("transactions") or []:
                owner = transaction_customer_id(transaction)
                if owner:
                    delivery.customer_ids.append(str(owner))
                    break
            else:
                if subject.get("payment_method_token"):
                    delivery.lookups.append(("payment_method", str(subject["payment_method_token"])))
                elif subject.get("id"):
                    # A thin subject (no transactions, no token): the subscription itself names its owner.
                    delivery.lookups.append(("subscription", str(subject["id"])))
        elif note.subject_type == "transaction":
            owner = transaction_customer_id(subject)
            if owner:
                delivery.customer_ids.append(str(owner))
        elif note.subject_type == "customer" and subject.get("id"):
            delivery.customer_ids.append(str(subject["id"]))
        return delivery

    @classmethod
    def customers_of(cls, connector: Rereader, lookups: list[tuple[str, str]]) -> list[str]:
        """The customers owning the payment-method tokens (or the subscriptions) a notification names."""
        braintree = cast(BraintreeConnector, connector)
        found: list[str] = []
        for kind, value in lookups:
            if kind == "subscription":
                subscription = braintree.find_subscription(value)
                owner = braintree._owner_of(subscription) if subscription else None
            else:
                owner = braintree.customer_of_token(value)
            if owner:
                found.append(owner)
        return found

    @classmethod
    def answer_challenge(cls, settings: Mapping[str, Any], challenge: str) -> str:
        """Braintree's endpoint check: ``bt_challenge`` answered with ``public_key|HMAC``."""
        return braintree_challenge_response(
            challenge, str(settings.get("public_key") or ""), str(settings.get("private_key") or "")
        )

    # -- the stream -------------------------------------------------------------------------------

    def read_customers(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """The reader of stream ``customers`` (see the class docstring).

        State: ``since`` (None until the first import finished), ``page_token`` (the GraphQL
        ``endCursor`` of an interrupted first import) and ``watermark``.
        """
        if full_refresh or not state.get("since") or state.get("page_token"):
            yield from self._read_all(state)
        else:
            yield from self._read_changes(str(state["since"]))

    def _read_all(self, state: dict[str, Any]) -> Iterator[Batch]:
        tz = account_timezone()
        watermark = state.get("watermark") or _iso(self.started_at - LOOKBACK)
        by_token = self.subscriptions_by_token({})

        def records_of(nodes: list[dict[str, Any]]) -> list[SourceCustomerRecord]:
            return [
                map_customer(node, [s for t in payment_method_tokens(node) for s in by_token.get(t, [])], tz)
                for node in nodes
            ]

        yield from self.read_pages(
            "customers",
            self.customer_pages({}, start_token=state.get("page_token")),
            records_of,
            lambda page: self.cursor_after(page, state.get("since"), watermark),
        )

    def _read_changes(self, since: str) -> Iterator[Batch]:
        tz = account_timezone()
        watermark = _iso(self.started_at - LOOKBACK)
        fetched = 0
        affected: dict[str, None] = {}  # ordered set of customer ids to re-read in full
        for page in self.customer_pages({"createdAt": {"greaterThanOrEqualTo": since}}):
            fetched += len(page.items)
            for node in page.items:
                if payment_method_tokens(node) or has_transaction(node):
                    affected[str(node.get("legacyId") or node["id"])] = None
        created = {"created_at": {"min": since}}
        sub_ids, sub_page = self.search_ids("subscriptions", created)
        for batch in self.fetch_by_ids("subscriptions", sub_ids, sub_page):
            fetched += len(batch)
            for subscription in batch:
                owner = self._owner_of(subscription)
                if owner:
                    affected[owner] = None
        transacted: set[str] = set()
        txn_ids, txn_page = self.search_ids("transactions", created)
        for batch in self.fetch_by_ids("transactions", txn_ids, txn_page):
            fetched += len(batch)
            for transaction in batch:
                owner = transaction_customer_id(transaction)
                if owner:
                    affected[owner] = None
                    transacted.add(owner)
        fetched += self._reconcile(affected, sub_page, tz)
        ids = list(affected)
        if not ids:
            yield Batch("customers", [], {"since": watermark, "watermark": watermark}, fetched)
            return
        for start in range(0, len(ids), self.page_size):
            records = []
            for customer_id in ids[start : start + self.page_size]:
                found = self.find_customer(customer_id)
                if found is None:
                    continue
                node, subscriptions = found
                # The XML customer does not list transactions; the transaction search told us instead.
                if customer_id in transacted or should_import(node, subscriptions, first_import=False):
                    records.append(map_customer(node, subscriptions, tz))
            last = start + self.page_size >= len(ids)
            # Mid-run batches keep the old cursor: a killed run re-reads the same window (idempotent).
            reached = watermark if last else since
            cursor = {"since": reached, "watermark": reached}
            yield Batch("customers", records, cursor, fetched if start == 0 else 0)


    def _reconcile(self, affected: dict[str, None], page_size: int, tz: ZoneInfo) -> int:
        """Re-read the subscriptions stored as not ended; add the owners of those whose state moved."""
        ids = sorted(self.known_subscriptions)
        fetched = 0
        for batch in self.fetch_by_ids("subscriptions", ids, page_size):
            fetched += len(batch)
            for subscription in batch:
                if map_subscription(subscription, tz).state == self.known_subscriptions.get(str(subscription["id"])):
                    continue
                owner = self._owner_of(subscription)
                if owner:
                    affected[owner] = None
        return fetched

    def _owner_of(self, subscription: Mapping[str, Any]) -> str | None:
        """The customer of a subscription: from its transactions, else by its payment-method token."""
        owner = _customer_in_transactions(subscription)
        token = subscription.get("payment_method_token")
        return owner or (self.customer_of_token(str(token)) if token else None)

    def find_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """``GET /subscriptions/{id}`` (the SDK's ``Subscription.find``), or None when it is unknown."""
        root = self._get_xml(f"/subscriptions/{quote(subscription_id, safe='')}")
        value = xml_to_dict(root) if root is not None else None
        return value if isinstance(value, dict) else None


def transaction_customer_id(transaction: Any) -> str | None:
    """The customer id a gateway transaction names (``<customer><id>``, else ``<customer-id>``), if any."""
    if not isinstance(transaction, Mapping):
        return None
    customer = transaction.get("customer")
    owner = customer.get("id") if isinstance(customer, Mapping) else None
    owner = owner or transaction.get("customer_id")
    return str(owner) if owner else None


def _customer_in_transactions(subscription: Mapping[str, Any]) -> str | None:
    for transaction in subscription.get("transactions") or []:
        owner = transaction_customer_id(transaction)
        if owner:
            return owner
    return None


def _parse_xml(content: bytes, path: str, source: str) -> ET.Element:
    try:
        return SafeET.fromstring(content)
    except ET.ParseError as exc:
        raise ApiError(f"{source}: Braintree gateway answered {path} with malformed XML: {exc}") from None
    except DefusedXmlException as exc:
        raise ApiError(f"{source}: Braintree gateway answered {path} with a DTD or entities, refused: {exc}") from None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
