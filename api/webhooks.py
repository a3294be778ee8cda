"""Webhook receivers: ``POST /webhooks/{source_name}`` for Stripe, Chargebee, Recurly, Braintree, GoCardless,
HubSpot, Intercom, and the push-only Segment and Google Play (payloads URL).

These routes do not take the API key: each request authenticates by the integration's own signature
(or, for Chargebee, the HTTP Basic pair configured on the webhook), checked over the RAW body by the
pure functions of ``connectors.signatures``. The order of work is what keeps SPEC section 8's promise
that a bad webhook stores nothing:

1. read the raw body, refusing more than ``MAX_BODY_BYTES`` (413) before reading it all;
2. verify the signature against the source's settings (401, nothing stored);
3. parse the payload (422 when it is not what the integration sends);
4. find the affected customers and re-read each through the source's connector (``fetch_record``):
   events of Recurly, GoCardless and Braintree are thin, and re-reading also gives the complete set of
   subscriptions a record must carry; the connector applies the integration's rule (a GoCardless
   customer without a payment, a Braintree customer without subscription or transaction, is skipped);
5. upsert all records in ONE transaction (``storage.upsert.upsert_records``).

A failure to re-read from the vendor answers 502, so the vendor retries the delivery later.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import Connection, Engine, select

from connectors.base import Connector, SettingsError
from connectors.braintree import transaction_customer_id
from connectors.gocardless import CustomerResolver
from connectors.google_play import GooglePlayPayloadError, payload_partial
from connectors.http import ApiError, ConnectorError
from connectors.push import PartialRecord, complete
from connectors.registry import connector_class
from connectors.segment import SegmentPayloadError, fold_calls, split_calls
from connectors.signatures import (
    WebhookPayloadError,
    WebhookSignatureError,
    braintree_challenge_response,
    parse_braintree_notification,
    verify_basic_auth,
    verify_braintree_signature,
    verify_gocardless_signature,
    verify_hubspot_signature,
    verify_intercom_signature,
    verify_recurly_signature,
    verify_segment_signature,
    verify_stripe_signature,
)
from funnelsync.records import SourceCustomerRecord
from jobs.secrets import SecretResolutionError, resolve_settings
from storage.api_keys import verify_api_key
from storage.schema import source_customers
from storage.sources import get_source
from storage.upsert import upsert_records

MAX_BODY_BYTES = 1024 * 1024
WEBHOOK_KINDS = ("stripe", "chargebee", "recurly", "braintree", "gocardless", "hubspot", "intercom", "segment", "google_play")
# HubSpot subscription types whose object is re-read, and the generic ``object.*`` events with the
# objectTypeId of contacts (0-1) and companies (0-2).
HUBSPOT_EVENTS = {
    "contacts": frozenset({"contact.creation", "contact.propertyChange", "contact.restore", "contact.merge",
                           "contact.associationChange"}),
    "companies": frozenset({"company.creation", "company.propertyChange", "company.restore", "company.merge",
                            "company.associationChange"}),
}
HUBSPOT_OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2"}
HUBSPOT_OBJECT_EVENTS = frozenset({"object.creation", "object.propertyChange", "object.restore", "object.merge"})

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])

ConnectorFactory = Callable[[str, str, Mapping[str, Any]], Connector]


class WebhookRejected(Exception):
    """A delivery refused with an HTTP status and a one-line reason (never a secret)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class ParsedDelivery:
    """What a verified delivery is about: its event names and how to find the affected customers."""

    events: list[str]
    customer_ids: list[str] = field(default_factory=list)
    # Objects whose customer must be looked up through the connector: (object type, id).
    lookups: list[tuple[str, str]] = field(default_factory=list)
    # Push-only integrations (Segment, Google Play payloads): the records the delivery itself carries,
    # completed with the stored values instead of re-read from a vendor API.
    partials: list[PartialRecord] | None = None
    skipped: int = 0


def _default_connector(kind: str, name: str, settings: Mapping[str, Any]) -> Connector:
    return connector_class(kind)(settings, source_name=name)


# --- reading the body -----------------------------------------------------------------------------


async def read_body_limited(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, byte for byte, or ``WebhookRejected(413)`` as soon as it exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise WebhookRejected(413, f"webhook body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise WebhookRejected(413, f"webhook body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(body: bytes, kind: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookRejected(422, f"{kind} webhook body is not JSON") from None


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise WebhookRejected(422, f"{what} is missing or not an object")
    return value


def _id(value: Any, what: str) -> str | None:
    """An object id from a verified payload: a string or an integer, else 422.

    Anything else (an object, a list) would be turned into a nonsense vendor URL and answered 502.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise WebhookRejected(422, f"{what} must be a string id, got {type(value).__name__}")
    return str(value)


# --- per integration: verify, then say which customers the delivery is about ----------------------


def _stripe(settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes) -> ParsedDelivery:
    verify_stripe_signature(body, headers.get("stripe-signature"), str(settings.get("webhook_secret") or ""))
    event = _dict(_json(body, "Stripe"), "Stripe event")
    obj = _dict(_dict(event.get("data"), "Stripe event data").get("object"), "Stripe event data.object")
    event_type = str(event.get("type") or "")
    if obj.get("object") == "customer":
        customer = _id(obj.get("id"), "Stripe event data.object.id")
    else:
        customer = obj.get("customer")
        customer = customer.get("id") if isinstance(customer, dict) else customer
        customer = _id(customer, "Stripe event data.object.customer")
    if event_type == "customer.deleted" or not customer:
        return ParsedDelivery([event_type])
    return ParsedDelivery([event_type], [str(customer)])


def _chargebee(settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes) -> ParsedDelivery:
    verify_basic_auth(
        headers.get("authorization"),
        str(settings.get("webhook_username") or ""),
        str(settings.get("webhook_password") or ""),
    )
    event = _dict(_json(body, "Chargebee"), "Chargebee event")
    content = _dict(event.get("content"), "Chargebee event content")
    customer_obj, subscription_obj = content.get("customer"), content.get("subscription")
    customer = (customer_obj.get("id") if isinstance(customer_obj, dict) else None) or (
        subscription_obj.get("customer_id") if isinstance(subscription_obj, dict) else None
    )
    customer = _id(customer, "Chargebee customer id")
    event_type = str(event.get("event_type") or "")
    if not customer or event_type == "customer_deleted":
        return ParsedDelivery([event_type])
    return ParsedDelivery([event_type], [str(customer)])


def _recurly(settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes) -> ParsedDelivery:
    verify_recurly_signature(
        body, headers.get("recurly-signature"), str(settings.get("webhook_secret") or "")
    )
    note = _dict(_json(body, "Recurly"), "Recurly notification")
    object_type, object_id = note.get("object_type"), _id(note.get("id"), "Recurly notification id")
    if not isinstance(object_type, str) or not object_id:
        raise WebhookRejected(422, "Recurly notification lacks object_type or id")
    event = f"{object_type}.{note.get('event_type')}"
    if object_type == "account":
        return ParsedDelivery([event], [str(object_id)])
    return ParsedDelivery([event], lookups=[(object_type, str(object_id))])


def _gocardless(settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes) -> ParsedDelivery:
    verify_gocardless_signature(
        body, headers.get("webhook-signature"), str(settings.get("webhook_secret") or "")
    )
    payload = _dict(_json(body, "GoCardless"), "GoCardless webhook")
    events = payload.get("events")
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise WebhookRejected(422, "GoCardless webhook lacks an events list")
    parsed = ParsedDelivery([f"{e.get('resource_type')}.{e.get('action')}" for e in events])
    for event in events:
        links = event.get("links") or {}
        if not isinstance(links, dict):
            raise WebhookRejected(422, f"GoCardless event links must be an object, got {type(links).__name__}")
        for kind in ("customer", "mandate", "payment", "subscription"):
            link = _id(links.get(kind), f"GoCardless event links.{kind}")
            if link:
                parsed.lookups.append((kind, link))
                break
    return parsed


def _braintree(settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes) -> ParsedDelivery:
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise WebhookRejected(422, "Braintree webhook body is not form-encoded text") from None
    signature = next(iter(form.get("bt_signature") or []), None)
    payload = next(iter(form.get("bt_payload") or []), None)
    verify_braintree_signature(
        signature, payload, str(settings.get("public_key") or ""), str(settings.get("private_key") or "")
    )
    assert payload is not None  # verified above
    try:
        note = parse_braintree_notification(payload)
    except WebhookPayloadError as exc:
        raise WebhookRejected(422, str(exc)) from None
    parsed = ParsedDelivery([note.kind])
    subject = note.subject
    if note.subject_type == "subscription":
        for transaction in subject.get("transactions") or []:
            owner = transaction_customer_id(transaction)
            if owner:
                parsed.customer_ids.append(str(owner))
                break
        else:
            if subject.get("payment_method_token"):
                parsed.lookups.append(("payment_method", str(subject["payment_method_token"])))
    elif note.subject_type == "transaction":
        owner = transaction_customer_id(subject)
        if owner:
            parsed.customer_ids.append(str(owner))
    elif note.subject_type == "customer" and subject.get("id"):
        parsed.customer_ids.append(str(subject["id"]))
    return parsed


def _hubspot(
    settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, *, url: str = ""
) -> ParsedDelivery:
    # HubSpot signs the URL it called; behind a TLS-terminating proxy we see http:// for its https://,
    # and a rewriting proxy changes more: the ``webhook_url`` setting then names the public URL.
    uris = [str(settings["webhook_url"])] if settings.get("webhook_url") else []
    if url:
        uris.append(url)
        if url.startswith("http://"):
            uris.append("https://" + url[len("http://") :])
    verify_hubspot_signature(
        "POST",
        uris,
        body,
        headers.get("x-hubspot-signature-v3"),
        headers.get("x-hubspot-request-timestamp"),
        str(settings.get("webhook_client_secret") or ""),
    )
    events = _json(body, "HubSpot")
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise WebhookRejected(422, "HubSpot webhook body is not a JSON array of events")
    parsed = ParsedDelivery([str(e.get("subscriptionType") or "") for e in events])
    object_type = str(settings.get("object_type") or "contacts")
    for event in events:
        kind = event.get("subscriptionType")
        relevant = kind in HUBSPOT_EVENTS.get(object_type, ()) or (
            kind in HUBSPOT_OBJECT_EVENTS and str(event.get("objectTypeId")) == HUBSPOT_OBJECT_TYPE_IDS.get(object_type)
        )
        object_id = _id(event.get("objectId"), "HubSpot event objectId")
        if relevant and object_id:
            parsed.customer_ids.append(object_id)
    return parsed


def _intercom_company_ids(item: Any) -> list[str]:
    """Companies an Intercom notification item is about: a company, a contact's companies, or both
    halves of a ``company.contact.attached`` item (``{"type": "contact_company", "company": …}``)."""
    if not isinstance(item, dict):
        return []
    if item.get("type") == "company" and item.get("id"):
        return [str(item["id"])]
    found: list[str] = []
    if isinstance(item.get("company"), dict) and item["company"].get("id"):
        found.append(str(item["company"]["id"]))
    companies = item.get("companies")
    refs = companies.get("data") if isinstance(companies, dict) else companies
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, dict) and ref.get("id"):
            found.append(str(ref["id"]))
    if isinstance(item.get("contact"), dict):
        found.extend(_intercom_company_ids(item["contact"]))
    return found


def _intercom(settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes) -> ParsedDelivery:
    verify_intercom_signature(body, headers.get("x-hub-signature"), str(settings.get("webhook_secret") or ""))
    note = _dict(_json(body, "Intercom"), "Intercom notification")
    topic = note.get("topic")
    if not isinstance(topic, str) or not topic:
        raise WebhookRejected(422, "Intercom notification lacks a topic")
    data = _dict(note.get("data"), "Intercom notification data")
    # ``*.deleted`` topics carry ids only, and the ping sent when a webhook is saved carries nothing.
    if topic == "ping" or topic.endswith(".deleted"):
        return ParsedDelivery([topic])
    return ParsedDelivery([topic], _intercom_company_ids(data.get("item")))


def _segment(settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes) -> ParsedDelivery:
    verify_segment_signature(body, headers.get("x-signature"), str(settings.get("shared_secret") or ""))
    create_on = str(settings.get("create_on") or "identify")
    if create_on not in ("identify", "group"):
        raise WebhookRejected(500, f"segment setting create_on={create_on!r}: expected identify or group")
    try:
        delivery = fold_calls(split_calls(_json(body, "Segment")), create_on)
    except SegmentPayloadError as exc:
        raise WebhookRejected(422, str(exc)) from None
    return ParsedDelivery(delivery.calls, partials=list(delivery.changes.values()), skipped=delivery.skipped)


def _api_key_from_basic(header: str | None) -> str | None:
    """The user name of an HTTP Basic header (the commercial product's API key convention)."""
    scheme, _, encoded = (header or "").strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        user, _, _ = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return user or None


def _google_play(
    settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, *, engine: Engine
) -> ParsedDelivery:
    # The "Payloads URL": Google Play does not sign anything; the developer's backend authenticates with
    # a funnelsync API key as the HTTP Basic user name, as it would with the commercial product.
    key = _api_key_from_basic(headers.get("authorization"))
    if key is None:
        raise WebhookSignatureError("missing HTTP Basic credentials (a funnelsync API key as user name)")
    with engine.connect() as conn:
        if not verify_api_key(conn, key):
            raise WebhookSignatureError("invalid API key")
    try:
        partial = payload_partial(_json(body, "Google Play"))
    except GooglePlayPayloadError as exc:
        raise WebhookRejected(422, str(exc)) from None
    return ParsedDelivery(["purchase"], partials=[partial])


# Kinds whose signature covers the request URL as well as the body.
URL_SIGNED = frozenset({"hubspot"})

PARSERS: dict[str, Callable[..., ParsedDelivery]] = {
    "stripe": _stripe,
    "chargebee": _chargebee,
    "recurly": _recurly,
    "gocardless": _gocardless,
    "braintree": _braintree,
    "hubspot": _hubspot,
    "intercom": _intercom,
    "segment": _segment,
    "google_play": _google_play,
}


# --- from the delivery to records -----------------------------------------------------------------


def _lookup_customers(kind: str, connector: Any, lookups: list[tuple[str, str]]) -> list[str]:
    """Customer ids for objects a thin event names, read through the connector."""
    found: list[str] = []
    if kind == "gocardless":
        resolver = CustomerResolver(connector.client)
        for object_type, object_id in lookups:
            owner = resolver.customer_of_event({"links": {object_type: object_id}})
            if owner:
                found.append(owner)
    elif kind == "braintree":
        for _, token in lookups:
            owner = connector.customer_of_token(token)
            if owner:
                found.append(owner)
    elif kind == "recurly":
        for object_type, object_id in lookups:
            path = RECURLY_OBJECT_PATHS.get(object_type)
            if path is None:
                continue
            try:
                item = connector.client.get_json(f"{path}/{quote(object_id, safe='')}")
            except ApiError as exc:
                if exc.status == 404:
                    continue
                raise
            account = (item or {}).get("account") or {}
            if account.get("id"):
                found.append(str(account["id"]))
    return found


# Recurly notification object types whose object names its account (``account.id``).
RECURLY_OBJECT_PATHS = {
    "subscription": "/subscriptions",
    "invoice": "/invoices",
    "charge_invoice": "/invoices",
    "credit_invoice": "/invoices",
    "payment": "/transactions",
    "transaction": "/transactions",
}


def fetch_record(kind: str, connector: Any, customer_id: str) -> SourceCustomerRecord | None:
    """One customer re-read now, through the connector's ``fetch_record`` or its ``records_for``."""
    if hasattr(connector, "fetch_record"):
        return connector.fetch_record(customer_id)
    path = {"stripe": "/v1/customers", "chargebee": "/customers", "recurly": "/accounts"}.get(kind)
    if path is None or not hasattr(connector, "records_for"):
        raise WebhookRejected(501, f"the {kind} connector cannot re-read one customer")
    try:
        item = connector.client.get_json(f"{path}/{quote(customer_id, safe='')}")
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    if kind == "chargebee":
        item = (item or {}).get("customer")
    if not item or item.get("deleted") is True:
        return None
    records = connector.records_for([item])
    return records[0] if records else None


def _stored_values(conn: Connection, data_source_id: Any, external_ids: list[str]) -> dict[str, dict[str, Any]]:
    """What the source said before about these external ids (one query), keyed by external id."""
    if not external_ids:
        return {}
    rows = conn.execute(
        select(source_customers).where(
            source_customers.c.data_source_id == data_source_id, source_customers.c.external_id.in_(external_ids)
        )
    ).mappings()
    return {str(row["external_id"]): dict(row) for row in rows}


def complete_partials(conn: Connection, data_source_id: Any, partials: list[PartialRecord]) -> list[SourceCustomerRecord]:
    """Records for a push delivery: each partial overlaid on the stored values; update-only ones without
    a stored record are dropped."""
    stored = _stored_values(conn, data_source_id, [p.external_id for p in partials])
    records = [complete(p, stored.get(p.external_id)) for p in partials]
    return [r for r in records if r is not None]


def records_for_delivery(kind: str, connector: Any, parsed: ParsedDelivery) -> list[SourceCustomerRecord]:
    """Re-read every affected customer (once) through the connector; the connector applies the rule."""
    ids = list(dict.fromkeys(parsed.customer_ids + _lookup_customers(kind, connector, parsed.lookups)))
    if ids and hasattr(connector, "fetch_records"):
        # HubSpot posts up to 100 events at once and wants an answer within 5 s: one batch read.
        return list(connector.fetch_records(ids))
    records = []
    for customer_id in ids:
        record = fetch_record(kind, connector, customer_id)
        if record is not None:
            records.append(record)
    return records


def handle_webhook(
    engine: Engine,
    source_name: str,
    headers: Mapping[str, str],
    body: bytes,
    connector_factory: ConnectorFactory = _default_connector,
    url: str = "",
) -> dict[str, Any]:
    """Verify, parse, re-read and store one delivery; the counts as a JSON-ready dict.

    ``url`` is the URL the delivery was received on (HubSpot signs it).

    Raises:
        WebhookRejected: 404 unknown source or kind without webhooks, 409 disabled source, 401 bad
            signature, 422 bad payload, 500 unusable settings, 502 the vendor could not be read.
    """
    with engine.connect() as conn:
        source = get_source(conn, source_name)
    if source is None:
        raise WebhookRejected(404, f"no data source named {source_name!r}")
    if not source.enabled:
        # Refused (not accepted and dropped): the vendor keeps retrying until the source is enabled again.
        raise WebhookRejected(409, f"data source {source_name!r} is disabled")
    kind = str(source.kind)
    parser = PARSERS.get(kind)
    if parser is None:
        raise WebhookRejected(
            404, f"data source {source_name!r} is of kind {kind}, which has no webhooks here"
        )
    try:
        settings = resolve_settings(source.settings or {})
    except SecretResolutionError as exc:
        log.error("webhook for %s: %s", source_name, exc)
        raise WebhookRejected(500, f"settings of source {source_name!r} cannot be resolved: {exc}") from None
    if kind in URL_SIGNED:
        parser = functools.partial(parser, url=url)
    elif kind == "google_play":
        parser = functools.partial(parser, engine=engine)
    try:
        parsed = parser(settings, {k.lower(): v for k, v in headers.items()}, body)
    except WebhookSignatureError as exc:
        log.warning("webhook for %s refused: %s", source_name, exc)
        raise WebhookRejected(401, str(exc)) from None
    except (WebhookPayloadError, ValueError) as exc:
        # ValueError: a field a record refuses (a malformed date, a country that is not alpha-2).
        raise WebhookRejected(422, str(exc)) from None
    if parsed.partials is not None:
        try:
            with engine.begin() as conn:
                records = complete_partials(conn, source.id, parsed.partials)
                result = upsert_records(conn, source.id, records)
        except ValueError as exc:
            raise WebhookRejected(422, str(exc)) from None
        return {
            "source": str(source.name),
            "kind": kind,
            "events": parsed.events,
            "customers": [r.external_id for r in records],
            "skipped": parsed.skipped + len(parsed.partials) - len(records),
            "created": result.created,
            "updated": result.updated,
            "unchanged": result.unchanged,
        }
    try:
        with connector_factory(kind, str(source.name), settings) as connector:
            records = records_for_delivery(kind, connector, parsed)
    except SettingsError as exc:
        raise WebhookRejected(500, str(exc)) from None
    except ConnectorError as exc:
        log.error("webhook for %s: re-reading from %s failed: %s", source_name, kind, exc)
        raise WebhookRejected(502, f"could not re-read the affected customers from {kind}: {exc}") from None
    with engine.begin() as conn:
        result = upsert_records(conn, source.id, records)
    return {
        "source": str(source.name),
        "kind": kind,
        "events": parsed.events,
        "customers": [r.external_id for r in records],
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
    }


def _error(exc: WebhookRejected) -> JSONResponse:
    # The shape of every API error (api/errors.py): a status code and a one-line message.
    return JSONResponse({"code": exc.status, "message": exc.detail}, status_code=exc.status)


@router.post("/webhooks/{source_name}")
async def receive_webhook(source_name: str, request: Request) -> Response:
    """Receive one webhook delivery for the data source ``source_name`` (no API key: signed instead)."""
    try:
        body = await read_body_limited(request)
        factory = getattr(request.app.state, "webhook_connector_factory", None) or _default_connector
        outcome = await run_in_threadpool(
            handle_webhook,
            request.app.state.engine,
            source_name,
            dict(request.headers),
            body,
            factory,
            str(request.url),
        )
    except WebhookRejected as exc:
        return _error(exc)
    return JSONResponse(outcome)


@router.get("/webhooks/{source_name}")
async def braintree_challenge(
    source_name: str, request: Request, bt_challenge: str | None = None
) -> Response:
    """Braintree's endpoint check: ``GET ?bt_challenge=…`` answered with ``public_key|HMAC``."""
    engine: Engine = request.app.state.engine

    def answer() -> str:
        with engine.connect() as conn:
            source = get_source(conn, source_name)
        if source is None or source.kind != "braintree" or not bt_challenge:
            raise WebhookRejected(404, "no Braintree source with that name, or no bt_challenge")
        try:
            settings = resolve_settings(source.settings or {})
            return braintree_challenge_response(
                bt_challenge, str(settings.get("public_key") or ""), str(settings.get("private_key") or "")
            )
        except (WebhookPayloadError, WebhookSignatureError) as exc:
            raise WebhookRejected(422, str(exc)) from None
        except SecretResolutionError as exc:
            raise WebhookRejected(500, str(exc)) from None

    try:
        return PlainTextResponse(await run_in_threadpool(answer))
    except WebhookRejected as exc:
        return _error(exc)
