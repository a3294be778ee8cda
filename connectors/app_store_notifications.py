"""App Store Server Notifications V2 (push): one subscriber's subscription events, signed by Apple.

Apple posts ``{"signedPayload": "<JWS>"}`` to ``POST /app-store/NAME/notifications`` (the URL set in App
Store Connect, App Information → App Store Server Notifications, Version 2). The JWS carries its
certificate chain in the ``x5c`` header; Apple's ``app-store-server-library`` (``SignedDataVerifier``)
checks the chain up to the trusted root (Apple Root CA - G3, the file the source's
``root_certificates`` names), the signature, the bundle id, the App Apple ID and the environment, then
decodes the notification and its signed transaction and renewal info. Anything it refuses answers 401
and stores nothing.

Unlike the Subscription Event report (``connectors.app_store_connect``, anonymous daily counts), a
notification names one subscriber: the record is keyed by the purchase's ``appAccountToken`` (the app's
own user id, when the app sets one) else by its ``originalTransactionId``, which is also the
subscription's id. The integration's rule: a record is created only for a subscriber who starts a
**Free Trial introductory offer** (``SUBSCRIBED`` or ``OFFER_REDEEMED`` whose transaction has
``offerType`` 1 and ``offerDiscountType`` ``FREE_TRIAL``): lead created = the date of the first
transaction (``originalPurchaseDate``), free trial started = that event's ``purchaseDate``. Later
notifications update the subscription of a record that exists and never create one:

- ``DID_RENEW``, and a paid ``SUBSCRIBED``/``OFFER_REDEEMED``: active, first paid = the purchase date;
- ``DID_FAIL_TO_RENEW``: past due (billing retry or grace period);
- ``EXPIRED``: cancelled at the expiry date;
- ``REFUND``: cancelled at the revocation date;
- every other type (``TEST``, ``DID_CHANGE_RENEWAL_STATUS``, …) is acknowledged and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from connectors.base import Feed, Setting, SettingsError, SourceKind
from connectors.push import (
    APP_STORE_NOTIFICATIONS,
    PartialRecord,
    WebhookContext,
    WebhookDelivery,
    WebhookReceiver,
    json_body,
)
from connectors.signatures import WebhookPayloadError, WebhookSignatureError
from funnelsync.records import SubscriptionFact
from funnelsync.timeutil import from_epoch

# Apple's library (and the requests and cryptography stacks under it) is imported when a notification is
# verified: every command that lists the source kinds imports this module, and it took most of a second.
if TYPE_CHECKING:
    from appstoreserverlibrary.models.JWSTransactionDecodedPayload import JWSTransactionDecodedPayload
    from appstoreserverlibrary.signed_data_verifier import SignedDataVerifier

APPLIED = frozenset({"SUBSCRIBED", "OFFER_REDEEMED", "DID_RENEW", "DID_FAIL_TO_RENEW", "EXPIRED", "REFUND"})


def _true(value: Any) -> bool:
    return str(value).strip().lower() not in ("false", "0", "no", "off")


def load_roots(setting: Any) -> list[bytes]:
    """The trusted root certificates (DER) from the comma-separated paths in ``root_certificates``.

    Raises:
        SettingsError: no path, a file that cannot be read.
    """
    paths = [p.strip() for p in str(setting or "").split(",") if p.strip()]
    if not paths:
        raise SettingsError(
            "app_store: root_certificates must name Apple's root certificate file (AppleRootCA-G3.cer)"
        )
    roots = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise SettingsError(f"app_store: root certificate {path!r} cannot be read: {exc.strerror}") from None
        if data.lstrip().startswith(b"-----BEGIN"):
            from cryptography import x509
            from cryptography.hazmat.primitives.serialization import Encoding

            data = x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        roots.append(data)
    return roots


def make_verifier(settings: Mapping[str, Any]) -> SignedDataVerifier:
    """Apple's verifier for this source's app.

    Raises:
        SettingsError: a missing bundle id, an unknown environment, Production without ``app_apple_id``.
    """
    from appstoreserverlibrary.models.Environment import Environment
    from appstoreserverlibrary.signed_data_verifier import SignedDataVerifier

    bundle_id = str(settings.get("bundle_id") or "").strip()
    if not bundle_id:
        raise SettingsError("app_store: bundle_id is required (the app's bundle identifier)")
    name = str(settings.get("environment") or "Production")
    environment = Environment.PRODUCTION if name == "Production" else Environment.SANDBOX if name == "Sandbox" else None
    if environment is None:
        given = settings.get("environment")
        raise SettingsError(f"app_store: environment must be Production or Sandbox, got {given!r}")
    raw_id = str(settings.get("app_apple_id") or "").strip()
    if environment is Environment.PRODUCTION and not raw_id.isdigit():
        raise SettingsError("app_store: app_apple_id (the app's numeric Apple ID) is required in Production")
    return SignedDataVerifier(
        load_roots(settings.get("root_certificates")),
        _true(settings.get("online_checks", True)),
        environment,
        bundle_id,
        int(raw_id) if raw_id.isdigit() else None,
    )


def _when(ms: int | None) -> datetime | None:
    return from_epoch(ms / 1000) if ms is not None else None


def is_free_trial(tx: JWSTransactionDecodedPayload) -> bool:
    """A transaction of a Free Trial introductory offer."""
    from appstoreserverlibrary.models.OfferDiscountType import OfferDiscountType
    from appstoreserverlibrary.models.OfferType import OfferType

    return tx.rawOfferType == OfferType.INTRODUCTORY_OFFER.value and (
        tx.rawOfferDiscountType == OfferDiscountType.FREE_TRIAL.value
    )


def notification_partial(kind: str, tx: JWSTransactionDecodedPayload) -> PartialRecord:
    """What one applied notification says of its subscriber.

    Raises:
        WebhookPayloadError: the transaction has no ``originalTransactionId`` or ``purchaseDate``.
    """
    if not tx.originalTransactionId or tx.purchaseDate is None:
        raise WebhookPayloadError("App Store transaction lacks originalTransactionId or purchaseDate")
    purchased = _when(tx.purchaseDate)
    expires = _when(tx.expiresDate)
    trial = kind in ("SUBSCRIBED", "OFFER_REDEEMED") and is_free_trial(tx)
    fields: dict[str, Any] = {}
    if trial:
        fact = SubscriptionFact(
            tx.originalTransactionId, "trialing", trial_started_at=purchased, trial_ended_at=expires
        )
        fields = {"lead_created_at": _when(tx.originalPurchaseDate) or purchased, "free_trial_started_at": purchased}
    elif kind in ("SUBSCRIBED", "OFFER_REDEEMED", "DID_RENEW"):
        fact = SubscriptionFact(tx.originalTransactionId, "active", first_paid_at=purchased if tx.price != 0 else None)
    elif kind == "DID_FAIL_TO_RENEW":
        fact = SubscriptionFact(tx.originalTransactionId, "past_due")
    elif kind == "EXPIRED":
        fact = SubscriptionFact(tx.originalTransactionId, "cancelled", cancelled_at=expires or purchased)
    else:  # REFUND
        refunded = _when(tx.revocationDate) or purchased
        fact = SubscriptionFact(tx.originalTransactionId, "cancelled", cancelled_at=refunded)
    custom = {"app_store_product_id": tx.productId} if tx.productId else {}
    key = tx.appAccountToken or tx.originalTransactionId
    return PartialRecord(key, fields=fields, custom=custom, creates=trial, subscriptions=[fact])


class AppStoreNotificationsSource(SourceKind, WebhookReceiver):
    """App Store Server Notifications V2: each subscriber's subscription events, pushed by Apple."""

    kind = "app_store"
    title = "App Store Server Notifications"
    feeds = frozenset({Feed.PUSHED})
    endpoints: ClassVar[frozenset[str]] = frozenset({APP_STORE_NOTIFICATIONS})
    settings_schema = (
        Setting("bundle_id", required=True, help="the app's bundle identifier"),
        Setting("app_apple_id", help="the app's numeric Apple ID (required in Production)"),
        Setting("environment", default="Production", choices=("Production", "Sandbox"),
                help="which notifications this source takes"),
        Setting("root_certificates", required=True,
                help="path(s), comma-separated, of the trusted root: Apple Root CA - G3 (AppleRootCA-G3.cer)"),
        Setting("online_checks", default="true", help="check the chain's revocation with Apple (OCSP)"),
    )

    @classmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """A ``{"signedPayload": …}`` verified with Apple's library; the subscriber it names, if applied."""
        payload = json_body(body, "App Store")
        signed = payload.get("signedPayload") if isinstance(payload, dict) else None
        if not isinstance(signed, str) or not signed:
            raise WebhookPayloadError("App Store notification body must be {\"signedPayload\": \"<JWS>\"}")
        from appstoreserverlibrary.signed_data_verifier import VerificationException

        verifier = make_verifier(settings)
        try:
            notification = verifier.verify_and_decode_notification(signed)
            kind = notification.rawNotificationType or ""
            signed_tx = notification.data.signedTransactionInfo if notification.data else None
            tx = verifier.verify_and_decode_signed_transaction(signed_tx) if signed_tx else None
        except VerificationException as exc:
            raise WebhookSignatureError(f"App Store signedPayload refused: {_status(exc)}") from None
        event = f"{kind}.{notification.rawSubtype}" if notification.rawSubtype else kind
        if kind not in APPLIED or tx is None:
            return WebhookDelivery([event], partials=[], skipped=1)
        return WebhookDelivery([event], partials=[notification_partial(kind, tx)])


def _status(exc: Exception) -> str:
    from appstoreserverlibrary.signed_data_verifier import VerificationStatus

    status = getattr(exc, "status", None)
    return status.name.lower().replace("_", " ") if isinstance(status, VerificationStatus) else json.dumps(str(status))
