"""Google Play real-time developer notifications (RTDN): Pub/Sub push deliveries, pure reading and the
OIDC check.

Google Play publishes each subscription change to the developer's Cloud Pub/Sub topic; a **push**
subscription posts it to ``POST /google-play/NAME/rtdn`` as::

    {"message": {"data": "<base64 DeveloperNotification>", "messageId": "136969346945", "attributes": {…}},
     "subscription": "projects/myproject/subscriptions/mysubscription"}

with ``Authorization: Bearer <OIDC token>`` signed by Google for the push subscription's service
account. The token is verified with ``google-auth`` (``google.oauth2.id_token.verify_token``: Google's
signing certificates, expiry, the audience configured on the push subscription), then its issuer and,
when configured, its service-account ``email`` (verified) are checked.

A notification says only that a purchase changed (``subscriptionNotification``: ``notificationType``,
``purchaseToken``, ``subscriptionId``; ``eventTimeMillis`` at the top): it names no user and carries no
trial, so it never creates a customer. It updates the subscription of this source whose id is the
``purchaseToken`` (the payloads URL records each purchase's subscription under its token), by type:
renewed or recovered → active, paid at the event time; restarted → active; on hold or in grace period →
past due; revoked or expired → cancelled at the event time. Other types (purchased, canceled — still
active until it expires —, paused, price changes, …), ``testNotification`` and one-time products are
acknowledged and skipped.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from connectors.push import PartialRecord
from connectors.signatures import WebhookPayloadError, WebhookSignatureError
from funnelsync.records import SubscriptionFact
from funnelsync.timeutil import from_epoch

GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
CLOCK_SKEW_SECONDS = 10

# notificationType → (our state, whether it is a charge), per Google's RTDN reference.
RECOVERED, RENEWED, RESTARTED, ON_HOLD, IN_GRACE_PERIOD, REVOKED, EXPIRED = 1, 2, 7, 5, 6, 12, 13
APPLIED: dict[int, tuple[str, bool]] = {
    RECOVERED: ("active", True),
    RENEWED: ("active", True),
    RESTARTED: ("active", False),
    ON_HOLD: ("past_due", False),
    IN_GRACE_PERIOD: ("past_due", False),
    REVOKED: ("cancelled", False),
    EXPIRED: ("cancelled", False),
}
TYPE_NAMES = {
    1: "SUBSCRIPTION_RECOVERED", 2: "SUBSCRIPTION_RENEWED", 3: "SUBSCRIPTION_CANCELED", 4: "SUBSCRIPTION_PURCHASED",
    5: "SUBSCRIPTION_ON_HOLD", 6: "SUBSCRIPTION_IN_GRACE_PERIOD", 7: "SUBSCRIPTION_RESTARTED",
    8: "SUBSCRIPTION_PRICE_CHANGE_CONFIRMED", 9: "SUBSCRIPTION_DEFERRED", 10: "SUBSCRIPTION_PAUSED",
    11: "SUBSCRIPTION_PAUSE_SCHEDULE_CHANGED", 12: "SUBSCRIPTION_REVOKED", 13: "SUBSCRIPTION_EXPIRED",
    19: "SUBSCRIPTION_PRICE_CHANGE_UPDATED", 20: "SUBSCRIPTION_PENDING_PURCHASE_CANCELED",
}


def verify_push_token(authorization: str | None, settings: Mapping[str, Any], url: str) -> Mapping[str, Any]:
    """The claims of a Pub/Sub push's OIDC token, verified.

    The audience is the ``rtdn_audience`` setting, else the URL the push came to (Pub/Sub's default).

    Raises:
        WebhookSignatureError: no bearer token, a bad signature, expired, another audience or issuer, or
            another service account than ``rtdn_service_account``.
    """
    # Imported here: only this endpoint needs google-auth's transport (and requests).
    from google.auth import exceptions as google_exceptions
    from google.auth.transport import requests as google_requests
    from google.oauth2 import id_token

    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise WebhookSignatureError("missing Pub/Sub push token (Authorization: Bearer …)")
    audience = str(settings.get("rtdn_audience") or url)
    try:
        claims = id_token.verify_token(
            token.strip(),
            google_requests.Request(),
            audience=audience,
            certs_url=str(settings.get("oidc_certs_url") or GOOGLE_CERTS_URL),
            clock_skew_in_seconds=CLOCK_SKEW_SECONDS,
        )
    except google_exceptions.TransportError:
        raise WebhookSignatureError("Google's token signing certificates could not be fetched") from None
    except (ValueError, google_exceptions.GoogleAuthError) as exc:
        # The library's message says which check failed (signature, expiry, audience); it holds no secret.
        raise WebhookSignatureError(f"Pub/Sub push token refused: {str(exc).splitlines()[0][:200]}") from None
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise WebhookSignatureError("Pub/Sub push token was not issued by Google")
    expected = str(settings.get("rtdn_service_account") or "")
    if expected and (claims.get("email") != expected or claims.get("email_verified") is not True):
        raise WebhookSignatureError("Pub/Sub push token is of another service account than rtdn_service_account")
    return claims


def developer_notification(body: Any) -> dict[str, Any]:
    """The DeveloperNotification inside a Pub/Sub push body.

    Raises:
        WebhookPayloadError: not a push body, ``message.data`` not base64 JSON of an object.
    """
    message = body.get("message") if isinstance(body, dict) else None
    data = message.get("data") if isinstance(message, dict) else None
    if not isinstance(data, str):
        raise WebhookPayloadError("Pub/Sub push body must be {\"message\": {\"data\": \"<base64>\", …}, …}")
    try:
        decoded = json.loads(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise WebhookPayloadError("Pub/Sub message.data is not base64-encoded JSON") from None
    if not isinstance(decoded, dict):
        raise WebhookPayloadError("Pub/Sub message.data is not a DeveloperNotification object")
    return decoded


def notification_update(
    notification: Mapping[str, Any], package_name: str | None
) -> tuple[str, PartialRecord | None]:
    """The event name and the subscription update a DeveloperNotification asks for (None: acknowledged only).

    Raises:
        WebhookPayloadError: another app's package, a subscription notification without its token or type,
            an event time that is not epoch milliseconds.
    """
    if package_name and notification.get("packageName") not in (None, package_name):
        other = notification.get("packageName")
        raise WebhookPayloadError(f"notification is for package {other!r}, not {package_name!r}")
    if "testNotification" in notification:
        return "testNotification", None
    sub = notification.get("subscriptionNotification")
    if not isinstance(sub, dict):
        other_kind = next((k for k in notification if k.endswith("Notification")), "notification")
        return other_kind, None
    kind, token = sub.get("notificationType"), sub.get("purchaseToken")
    if isinstance(kind, bool) or not isinstance(kind, int) or not isinstance(token, str) or not token:
        raise WebhookPayloadError("subscriptionNotification needs an integer notificationType and a purchaseToken")
    name = TYPE_NAMES.get(kind, f"SUBSCRIPTION_{kind}")
    if kind not in APPLIED:
        return name, None
    try:
        when = from_epoch(int(str(notification.get("eventTimeMillis"))) / 1000)
    except ValueError:
        raise WebhookPayloadError("eventTimeMillis must be epoch milliseconds") from None
    state, charged = APPLIED[kind]
    fact = SubscriptionFact(
        token, state, first_paid_at=when if charged else None, cancelled_at=when if state == "cancelled" else None
    )
    return name, PartialRecord(token, creates=False, subscriptions=[fact], by_subscription=True)
