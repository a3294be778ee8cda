"""Google Play: the "Payloads URL" receiver and its mapping (pure).

Google Play tells nobody about purchases and has no list of customers, so there are two ways in:

1. **Payloads URL** (push, like the commercial product): the developer's backend POSTs each purchase to
   ``POST /webhooks/NAME`` with HTTP Basic (a funnelsync API key as the user name)::

       {"purchase_data": {"product_id": "pro_monthly", "purchase_token": "opaque-token"},
        "customer": {"external_id": "user-42", "name": "Ann Lee", "email": "ann@example.com",
                     "company": "Acme", "country": "DE", "state": null, "city": "Berlin", "zip": "10115",
                     "lead_created_at": "2025-01-02T10:00:00Z", "trial_started_at": "2025-01-02T10:05:00Z",
                     "attributes": {"tags": ["OnePlus", "multi_device"],
                                    "custom": [{"type": "Integer", "key": "seats", "value": 3}]}}}

   ``payload_partial`` maps it to a partial record: lead and trial dates only when the payload carries
   them, fields it leaves out keep their stored values; ``attributes.tags`` are added to the customer's
   tags and ``attributes.custom`` (``[{type, key, value}]``, the commercial product's custom attribute
   shape) set typed custom attributes.

2. **Daily Sales Report**: pulled from the developer's Cloud Storage bucket (``bucket`` setting, stream
   ``sales_reports``, ``connectors.google_play_storage``) by ``funnelsync sync`` and sync-all, or imported
   as a file (``connectors.files.google_play_report``).

Each payloads-URL purchase also records its subscription under its purchase token, which Google Play's
real-time developer notifications (``POST /google-play/NAME/rtdn``, ``connectors.google_play_rtdn``)
name when they update it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, ClassVar

from connectors.base import Feed, Setting
from connectors.google_play_rtdn import developer_notification, notification_update, verify_push_token
from connectors.google_play_storage import BucketReports
from connectors.push import (
    GOOGLE_PLAY_RTDN,
    WEBHOOK,
    PartialRecord,
    WebhookContext,
    WebhookDelivery,
    WebhookReceiver,
    json_body,
)
from connectors.signatures import WebhookSignatureError, basic_auth_user
from funnelsync.normalize import clean_text
from funnelsync.records import SubscriptionFact
from funnelsync.timeutil import from_epoch, to_utc

CUSTOMER_TEXT_FIELDS = ("name", "email", "company", "state", "city", "zip")


class GooglePlayPayloadError(ValueError):
    """A payloads-URL body that is not the documented shape (HTTP 422)."""


def parse_payload_time(value: Any, what: str) -> datetime | None:
    """An ISO 8601 datetime or date (naive → account time zone) or epoch seconds; None when empty.

    Raises:
        GooglePlayPayloadError: any other value.
    """
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return from_epoch(value)
    if not isinstance(value, str):
        raise GooglePlayPayloadError(f"customer.{what} must be an ISO 8601 string, got {type(value).__name__}")
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return to_utc(datetime(day.year, day.month, day.day))
        return to_utc(datetime.fromisoformat(text))
    except ValueError:
        raise GooglePlayPayloadError(f"customer.{what} {value!r} is not an ISO 8601 date or datetime") from None


def payload_partial(payload: Any) -> PartialRecord:
    """The partial record a payloads-URL body describes.

    Raises:
        GooglePlayPayloadError: not an object, ``purchase_data.product_id``/``purchase_token`` or
            ``customer.external_id`` missing, a field of the wrong type, a bad date or country.
    """
    if not isinstance(payload, dict):
        raise GooglePlayPayloadError("body must be a JSON object with purchase_data and customer")
    purchase, customer = payload.get("purchase_data"), payload.get("customer")
    if not isinstance(purchase, dict) or not isinstance(customer, dict):
        raise GooglePlayPayloadError("body needs the objects purchase_data and customer")
    for key in ("product_id", "purchase_token"):
        if not isinstance(purchase.get(key), str) or not purchase[key].strip():
            raise GooglePlayPayloadError(f"purchase_data.{key} is required (a string)")
    external_id = customer.get("external_id")
    if isinstance(external_id, bool) or not isinstance(external_id, (str, int)) or not str(external_id).strip():
        raise GooglePlayPayloadError("customer.external_id is required")
    fields: dict[str, Any] = {}
    for key in CUSTOMER_TEXT_FIELDS:
        value = customer.get(key)
        if value is not None and not isinstance(value, (str, int, float)):
            raise GooglePlayPayloadError(f"customer.{key} must be a string")
        if clean_text(value):
            fields[key] = clean_text(value)
    country = clean_text(customer.get("country"))
    if country:
        if len(country) != 2 or not country.isalpha():
            raise GooglePlayPayloadError(f"customer.country must be an ISO 3166 alpha-2 code, got {country!r}")
        fields["country"] = country.upper()
    lead = parse_payload_time(customer.get("lead_created_at"), "lead_created_at")
    trial = parse_payload_time(customer.get("trial_started_at"), "trial_started_at")
    if lead is not None:
        fields["lead_created_at"] = lead
    if trial is not None:
        fields["free_trial_started_at"] = trial
    attributes = customer.get("attributes") or {}
    if not isinstance(attributes, dict):
        raise GooglePlayPayloadError("customer.attributes must be an object")
    tags = payload_tags(attributes.get("tags"))
    custom = payload_custom(attributes.get("custom"))
    # Plain scalar attributes (an older flat form) are kept as custom attributes too.
    custom.update({str(k): v for k, v in attributes.items()
                   if k not in ("tags", "custom") and (v is None or isinstance(v, (str, int, float, bool)))})
    custom["google_play_product_id"] = purchase["product_id"].strip()
    # The purchase's subscription, under its token: what real-time developer notifications name.
    token = purchase["purchase_token"].strip()
    subscription = SubscriptionFact(token, "trialing" if trial else "active", trial_started_at=trial)
    return PartialRecord(
        str(external_id).strip(), fields=fields, custom=custom, creates=True, subscriptions=[subscription], tags=tags
    )


def payload_tags(value: Any) -> list[str] | None:
    """``attributes.tags``: a list of non-empty strings."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(t, str) and t.strip() for t in value):
        raise GooglePlayPayloadError("customer.attributes.tags must be a list of non-empty strings")
    return [t.strip() for t in value]


# The custom attribute types of the commercial product's API, and how a value of each is checked.
CUSTOM_TYPES: dict[str, Any] = {
    "string": lambda v: v if isinstance(v, str) else None,
    "integer": lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None,
    "decimal": lambda v: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None,
    "boolean": lambda v: v if isinstance(v, bool) else None,
    "timestamp": lambda v: parse_payload_time(v, "attributes.custom value").isoformat()  # type: ignore[union-attr]
    if isinstance(v, str) and v.strip() else None,
}


def payload_custom(value: Any) -> dict[str, Any]:
    """``attributes.custom``: ``[{"type": "String", "key": "channel", "value": "ads"}, …]`` → ``{key: value}``."""
    if value is None:
        return {}
    if not isinstance(value, list):
        raise GooglePlayPayloadError("customer.attributes.custom must be a list of {type, key, value}")
    found: dict[str, Any] = {}
    for i, item in enumerate(value):
        where = f"customer.attributes.custom[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"].strip():
            raise GooglePlayPayloadError(f"{where} needs a key (a non-empty string), a type and a value")
        kind = str(item.get("type") or "").lower()
        check = CUSTOM_TYPES.get(kind)
        if check is None:
            raise GooglePlayPayloadError(
                f"{where}: type {item.get('type')!r} is not one of String, Integer, Decimal, Boolean, Timestamp")
        raw = item.get("value")
        typed = None if raw is None else check(raw)
        if raw is not None and typed is None:
            raise GooglePlayPayloadError(f"{where}: value {raw!r} is not a {item.get('type')}")
        found[item["key"].strip()] = typed
    return found


class GooglePlaySource(BucketReports, WebhookReceiver):
    """Google Play: purchases pushed to the payloads URL, real-time developer notifications, and the monthly
    sales reports pulled from the developer's bucket when the source names one (or imported as files)."""

    kind = "google_play"
    title = "Google Play"
    feeds = frozenset({Feed.PUSHED, Feed.PULLED})
    endpoints: ClassVar[frozenset[str]] = frozenset({WEBHOOK, GOOGLE_PLAY_RTDN})
    settings_schema = (
        Setting("bucket", help="the Play Console's reports bucket, pubsite_prod_rev_<developer id> (pulled reports)"),
        Setting("service_account", secret=True,
                help="JSON key of the service account invited to read the reports (its text)"),
        Setting("rtdn_audience", help="audience of the Pub/Sub push's token (default: the URL it came to)"),
        Setting("rtdn_service_account", help="the Pub/Sub push subscription's service-account email"),
        Setting("package_name", help="the app's package name; notifications of another package are refused"),
        Setting("oidc_certs_url", help="where Google's token signing certificates are read"),
    )

    @classmethod
    def parse_delivery(
        cls,
        endpoint: str,
        settings: Mapping[str, Any],
        headers: Mapping[str, str],
        body: bytes,
        context: WebhookContext,
    ) -> WebhookDelivery:
        """A payloads-URL purchase, or a real-time developer notification (``connectors.google_play_rtdn``)."""
        if endpoint != GOOGLE_PLAY_RTDN:
            return super().parse_delivery(endpoint, settings, headers, body, context)
        verify_push_token(headers.get("authorization"), settings, context.url)
        notification = developer_notification(json_body(body, "Pub/Sub push"))
        event, update = notification_update(notification, str(settings.get("package_name") or "") or None)
        return WebhookDelivery([event], partials=[update] if update else [], skipped=0 if update else 1)

    @classmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """One purchase, authenticated by a funnelsync API key as the HTTP Basic user name."""
        # Google Play does not sign anything; the developer's backend authenticates with an API key, as it
        # would with the commercial product.
        key = basic_auth_user(headers.get("authorization"))
        if key is None:
            raise WebhookSignatureError("missing HTTP Basic credentials (a funnelsync API key as user name)")
        if not context.api_key_valid(key):
            raise WebhookSignatureError("invalid API key")
        return WebhookDelivery(["purchase"], partials=[payload_partial(json_body(body, "Google Play"))])
