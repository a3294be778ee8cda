"""Webhook signature checks for the billing integrations: pure functions, constant-time comparisons.

Each ``verify_*`` function takes the RAW request bytes (never a re-serialised JSON body: one changed
space breaks the HMAC) plus the header value(s) and the endpoint secret, and either returns quietly
or raises ``WebhookSignatureError`` whose message says what failed, never the secret or the expected
signature. A receiver maps that exception to HTTP 401 and stores nothing.

Schemes (each vendor's webhook documentation and official SDK):

* Stripe ``Stripe-Signature: t=<unix s>,v1=<hex>[,v1=<hex>]``: HMAC-SHA256(secret, ``"{t}.{body}"``);
  any ``v1`` may match (secret rotation); a timestamp older than the tolerance (default 300 s) is a
  replay. Same rule as stripe-python's ``WebhookSignature.verify_header``.
* Recurly ``recurly-signature: <unix ms>,<hex>[,<hex>]``: HMAC-SHA256(secret, ``"{ts}.{body}"``); two
  signatures during the 24 h after a secret rotation; drift either way beyond the tolerance (default
  5 minutes, like recurly's client libraries) is refused.
* GoCardless ``Webhook-Signature``: hex HMAC-SHA256(secret, body); no timestamp in the scheme.
* Braintree form fields ``bt_signature`` / ``bt_payload``: ``public_key|hex`` pairs joined by ``&``;
  hex = HMAC-SHA1(key=SHA1(private_key) digest, msg=bt_payload); the SDK also accepts the signature of
  the payload plus a trailing newline. ``bt_payload`` is base64 XML ``<notification>``.
* Chargebee: no signature; the endpoint is protected by HTTP Basic credentials the user configures.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from funnelsync.timeutil import parse_iso

STRIPE_TOLERANCE_SECONDS = 300
RECURLY_TOLERANCE_SECONDS = 300

Clock = Callable[[], float]


class WebhookSignatureError(ValueError):
    """The webhook did not prove it came from the integration (HTTP 401 material)."""


class WebhookSecretMissing(WebhookSignatureError):
    """The source has no secret to check a delivery against: unverifiable (401), and a configuration
    problem for the operator rather than for the sender."""


class WebhookPayloadError(ValueError):
    """The webhook was authentic but its payload cannot be read (HTTP 422 material)."""


def _hmac_hex(key: bytes, message: bytes, digest: Any = hashlib.sha256) -> str:
    return hmac.new(key, message, digest).hexdigest()


def _any_matches(expected: str, candidates: list[str]) -> bool:
    # Compare against every candidate (no early exit) so timing does not tell which one matched.
    matched = False
    for candidate in candidates:
        if hmac.compare_digest(expected.encode(), candidate.strip().lower().encode()):
            matched = True
    return matched


def _require_secret(secret: str | bytes | None, what: str) -> bytes:
    if secret is None or secret == "" or secret == b"":
        raise WebhookSecretMissing(f"no {what} configured for this source: cannot verify webhooks")
    return secret.encode() if isinstance(secret, str) else secret


# --- Stripe -------------------------------------------------------------------------------------


def stripe_signature_header(payload: bytes, secret: str, timestamp: int) -> str:
    """The ``Stripe-Signature`` value Stripe would send for ``payload`` at ``timestamp`` (for tests)."""
    signed = f"{timestamp}.".encode() + payload
    return f"t={timestamp},v1={_hmac_hex(secret.encode(), signed)}"


def verify_stripe_signature(
    payload: bytes,
    signature_header: str | None,
    secret: str,
    *,
    tolerance_seconds: int = STRIPE_TOLERANCE_SECONDS,
    clock: Clock = time.time,
) -> int:
    """Verify a Stripe ``Stripe-Signature`` header over the raw body.

    Args:
        payload: the raw request body, byte for byte.
        signature_header: the ``Stripe-Signature`` header value (``t=…,v1=…[,v1=…]``).
        secret: the endpoint signing secret (``whsec_…``).
        tolerance_seconds: the oldest timestamp accepted; 0 or less disables the check.
        clock: returns the current Unix time in seconds (injectable for tests).

    Returns:
        The signed timestamp (Unix seconds).

    Raises:
        WebhookSignatureError: missing or malformed header, no matching ``v1``, or a stale timestamp.
    """
    key = _require_secret(secret, "Stripe webhook signing secret")
    if not signature_header:
        raise WebhookSignatureError("missing Stripe-Signature header")
    timestamp: int | None = None
    signatures: list[str] = []
    for item in signature_header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise WebhookSignatureError(
                    "malformed Stripe-Signature header: t is not an integer"
                ) from None
        elif name == "v1":
            signatures.append(value)
    if timestamp is None:
        raise WebhookSignatureError("malformed Stripe-Signature header: no timestamp (t=)")
    if not signatures:
        raise WebhookSignatureError("malformed Stripe-Signature header: no v1 signature")
    expected = _hmac_hex(key, f"{timestamp}.".encode() + payload)
    if not _any_matches(expected, signatures):
        raise WebhookSignatureError(
            "Stripe signature does not match the payload (wrong secret or altered body)"
        )
    # Checked after the HMAC, as stripe-python does, so an attacker learns nothing about the clock.
    if tolerance_seconds > 0 and timestamp < clock() - tolerance_seconds:
        raise WebhookSignatureError(
            f"Stripe signature timestamp is older than the {tolerance_seconds} s tolerance (possible replay)"
        )
    return timestamp


# --- Recurly ------------------------------------------------------------------------------------


def recurly_signature_header(payload: bytes, secrets: list[str], timestamp_ms: int) -> str:
    """The ``recurly-signature`` value Recurly would send, one signature per secret (for tests)."""
    signed = f"{timestamp_ms}.".encode() + payload
    return ",".join([str(timestamp_ms)] + [_hmac_hex(s.encode(), signed) for s in secrets])


def verify_recurly_signature(
    payload: bytes,
    signature_header: str | None,
    secret: str,
    *,
    tolerance_seconds: int = RECURLY_TOLERANCE_SECONDS,
    clock: Clock = time.time,
) -> int:
    """Verify a Recurly ``recurly-signature`` header (``<unix ms>,<hex>[,<hex>]``) over the raw body.

    Args:
        payload: the raw request body.
        signature_header: the ``recurly-signature`` header value.
        secret: the webhook endpoint's secret key.
        tolerance_seconds: allowed drift either way between the header time and now; 0 disables it.
        clock: returns the current Unix time in seconds.

    Returns:
        The signed timestamp in Unix milliseconds.

    Raises:
        WebhookSignatureError: missing or malformed header, no matching signature, or drift too large.
    """
    key = _require_secret(secret, "Recurly webhook secret")
    if not signature_header:
        raise WebhookSignatureError("missing recurly-signature header")
    parts = [p.strip() for p in signature_header.split(",")]
    try:
        timestamp_ms = int(parts[0])
    except ValueError:
        raise WebhookSignatureError(
            "malformed recurly-signature header: timestamp is not an integer"
        ) from None
    signatures = [p for p in parts[1:] if p]
    if not signatures:
        raise WebhookSignatureError("malformed recurly-signature header: no signature after the timestamp")
    expected = _hmac_hex(key, f"{timestamp_ms}.".encode() + payload)
    if not _any_matches(expected, signatures):
        raise WebhookSignatureError(
            "Recurly signature does not match the payload (wrong secret or altered body)"
        )
    if tolerance_seconds > 0 and abs(clock() * 1000 - timestamp_ms) > tolerance_seconds * 1000:
        raise WebhookSignatureError(
            f"Recurly signature timestamp is more than {tolerance_seconds} s away from now (possible replay)"
        )
    return timestamp_ms


# --- GoCardless ---------------------------------------------------------------------------------


def gocardless_signature(payload: bytes, secret: str) -> str:
    """The ``Webhook-Signature`` value GoCardless sends for ``payload`` (for tests)."""
    return _hmac_hex(secret.encode(), payload)


def verify_gocardless_signature(payload: bytes, signature_header: str | None, secret: str) -> None:
    """Verify a GoCardless ``Webhook-Signature`` (hex HMAC-SHA256 of the raw body).

    Raises:
        WebhookSignatureError: missing header or mismatch. (GoCardless asks for status 498 on a
            mismatch; any non-2xx works, and the receivers here answer 401 like the others.)
    """
    key = _require_secret(secret, "GoCardless webhook endpoint secret")
    if not signature_header or not signature_header.strip():
        raise WebhookSignatureError("missing Webhook-Signature header")
    if not _any_matches(_hmac_hex(key, payload), [signature_header]):
        raise WebhookSignatureError(
            "GoCardless Webhook-Signature does not match the payload (wrong secret or altered body)"
        )


# --- Braintree ----------------------------------------------------------------------------------

# What base64 (with the SDK's line breaks) may contain; anything else is refused before decoding.
_BT_PAYLOAD_CHARS = re.compile(r"[^A-Za-z0-9+=/\n\r]")


def _braintree_hmac(private_key: str, message: bytes) -> str:
    # Braintree keys the HMAC with the SHA1 digest of the private key (braintree-python util/crypto.py).
    sha1 = hashlib.sha1(private_key.encode())  # nosec B324 # the vendor's protocol, inside an HMAC
    return _hmac_hex(sha1.digest(), message, hashlib.sha1)


def braintree_signature(bt_payload: str, public_key: str, private_key: str) -> str:
    """The ``bt_signature`` Braintree sends for ``bt_payload`` (for tests)."""
    return f"{public_key}|{_braintree_hmac(private_key, bt_payload.encode())}"


def verify_braintree_signature(
    bt_signature: str | None, bt_payload: str | None, public_key: str, private_key: str
) -> None:
    """Verify Braintree's ``bt_signature`` over ``bt_payload``.

    Args:
        bt_signature: ``public_key|hex`` pairs joined by ``&``; the pair for our public key is used.
        bt_payload: the base64 payload exactly as posted.
        public_key: the merchant's public key (selects the pair).
        private_key: the merchant's private key (SHA1 of it keys the HMAC-SHA1).

    Raises:
        WebhookSignatureError: missing fields, no pair for our public key, bad characters, or mismatch.
    """
    key = _require_secret(private_key, "Braintree private key")
    if not public_key:
        raise WebhookSecretMissing("no Braintree public key configured for this source")
    if not bt_signature or not bt_payload:
        raise WebhookSignatureError("missing bt_signature or bt_payload form field")
    if _BT_PAYLOAD_CHARS.search(bt_payload):
        raise WebhookSignatureError("bt_payload contains characters that are not base64")
    candidates = []
    for pair in bt_signature.split("&"):
        pair_public, sep, hex_sig = pair.partition("|")
        if sep and hmac.compare_digest(pair_public.encode(), public_key.encode()):
            candidates.append(hex_sig)
    if not candidates:
        raise WebhookSignatureError("bt_signature has no signature for this source's public key")
    payload = bt_payload.encode()
    private = key.decode()
    # The SDK signs base64 with a final newline and accepts the payload as posted or with "\n" added
    # (a form parser or proxy may strip it); we also accept it with trailing newlines removed, which
    # changes nothing in the decoded XML.
    variants = {payload, payload + b"\n", payload.rstrip(b"\r\n")}
    expected = [_braintree_hmac(private, v) for v in variants]
    if not any(_any_matches(e, candidates) for e in expected):
        raise WebhookSignatureError(
            "Braintree signature does not match the payload (wrong key or altered body)"
        )


_BT_CHALLENGE = re.compile(r"^[a-f0-9]{20,32}$")


def braintree_challenge_response(challenge: str, public_key: str, private_key: str) -> str:
    """Answer Braintree's endpoint check (``bt_challenge``): ``public_key|HMAC-SHA1(challenge)``.

    Raises:
        WebhookPayloadError: the challenge is not 20-32 lowercase hex characters (the SDK's rule).
    """
    if not _BT_CHALLENGE.match(challenge or ""):
        raise WebhookPayloadError("bt_challenge must be 20-32 lowercase hex characters")
    _require_secret(private_key, "Braintree private key")
    return f"{public_key}|{_braintree_hmac(private_key, challenge.encode())}"


@dataclass(frozen=True, slots=True)
class BraintreeNotification:
    """A decoded Braintree webhook notification.

    ``subject`` holds the first child of ``<subject>`` (e.g. ``subscription``) as a dict in the SDK's
    shape: element names with dashes turned into underscores, typed leaves converted (see ``xml_to_dict``).
    """

    kind: str
    timestamp: datetime | None
    subject_type: str | None
    subject: dict[str, Any] = field(default_factory=dict)


def _xml_leaf(element: ET.Element) -> Any:
    kind = element.get("type")
    text = (element.text or "").strip()
    if element.get("nil") == "true":
        return None
    if kind == "boolean":
        return text == "true"
    if kind == "integer":
        return int(text) if text else None
    return text if text != "" else None


def xml_to_dict(element: ET.Element) -> Any:
    """Turn a Braintree XML element into Python values the way braintree-python's XmlUtil does.

    Children become dict keys (dashes → underscores); ``type="array"`` becomes a list; ``boolean``
    and ``integer`` leaves are converted; ``datetime``/``date``/``decimal`` stay strings for the
    caller to parse (the mapping knows which zone a date means).
    """
    if element.get("type") in ("array", "collection"):
        return [xml_to_dict(child) for child in element if child.tag not in _COLLECTION_META]
    children = list(element)
    if not children:
        return _xml_leaf(element)
    return {child.tag.replace("-", "_"): xml_to_dict(child) for child in children}


# Paging fields of ``<subscriptions type="collection">`` that are not items.
_COLLECTION_META = {"current-page-number", "page-size", "total-items"}


def parse_braintree_notification(bt_payload: str) -> BraintreeNotification:
    """Decode a (verified) ``bt_payload``: base64 of ``<notification><timestamp/><kind/><subject>…``.

    Raises:
        WebhookPayloadError: not base64, not XML, or not a notification.
    """
    try:
        xml_bytes = base64.b64decode("".join(bt_payload.split()), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookPayloadError("bt_payload is not valid base64") from None
    try:
        root = SafeET.fromstring(xml_bytes)
    except ET.ParseError as exc:
        raise WebhookPayloadError(f"bt_payload is not well-formed XML: {exc}") from None
    except DefusedXmlException as exc:
        # A notification has no DTD; entity declarations are how XML bombs and external reads arrive.
        raise WebhookPayloadError(f"bt_payload declares a DTD or entities, refused: {exc}") from None
    if root.tag != "notification":
        raise WebhookPayloadError(f"bt_payload root element is <{root.tag}>, expected <notification>")
    kind = (root.findtext("kind") or "").strip()
    if not kind:
        raise WebhookPayloadError("Braintree notification has no <kind>")
    raw_ts = (root.findtext("timestamp") or "").strip()
    try:
        timestamp = parse_iso(raw_ts) if raw_ts else None
    except ValueError:
        raise WebhookPayloadError(f"Braintree notification timestamp {raw_ts!r} is not ISO 8601") from None
    subject_el = root.find("subject")
    subject_type: str | None = None
    subject: dict[str, Any] = {}
    if subject_el is not None and len(subject_el):
        first = subject_el[0]
        subject_type = first.tag.replace("-", "_")
        value = xml_to_dict(first)
        subject = value if isinstance(value, dict) else {"value": value}
    return BraintreeNotification(kind=kind, timestamp=timestamp, subject_type=subject_type, subject=subject)


# --- Chargebee ----------------------------------------------------------------------------------


def verify_basic_auth(authorization_header: str | None, username: str, password: str) -> None:
    """Check an HTTP Basic ``Authorization`` header against the configured credentials (Chargebee).

    Chargebee does not sign webhooks; the user sets a user name and password on the webhook in
    Chargebee and the same pair in the source settings.

    Raises:
        WebhookSignatureError: no credentials configured, header missing/malformed, or mismatch.
    """
    if not username and not password:
        raise WebhookSecretMissing("no webhook Basic-auth credentials configured for this source")
    if not authorization_header:
        raise WebhookSignatureError("missing Authorization header (Basic credentials expected)")
    scheme, _, encoded = authorization_header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise WebhookSignatureError("Authorization header is not HTTP Basic")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSignatureError("Authorization header is not valid base64") from None
    given_user, sep, given_password = decoded.partition(b":")
    if not sep:
        raise WebhookSignatureError("Basic credentials lack the ':' separator")
    # Both compared (no short circuit) so timing does not reveal which half was wrong.
    user_ok = hmac.compare_digest(given_user, username.encode())
    password_ok = hmac.compare_digest(given_password, password.encode())
    if not (user_ok and password_ok):
        raise WebhookSignatureError("webhook Basic credentials do not match")


def basic_auth_user(authorization_header: str | None) -> str | None:
    """The user name of an HTTP Basic ``Authorization`` header, None when there is none.

    The commercial product's convention for API keys: the key is the user name, the password is empty.
    """
    scheme, _, encoded = (authorization_header or "").strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        user, _, _ = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return user or None


# --- HubSpot ------------------------------------------------------------------------------------

HUBSPOT_TOLERANCE_SECONDS = 300

# HubSpot signs the URI with these percent-escapes decoded (its v3 validation guide lists them).
_HUBSPOT_DECODED = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$", "%27": "'",
    "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}
_HUBSPOT_ESCAPE = re.compile("|".join(_HUBSPOT_DECODED), re.IGNORECASE)


def hubspot_signature_v3(method: str, uri: str, payload: bytes, timestamp: str, client_secret: str) -> str:
    """The ``X-HubSpot-Signature-v3`` HubSpot sends: base64 HMAC-SHA256(secret, method+uri+body+timestamp)."""
    message = method.upper().encode() + uri.encode() + payload + timestamp.encode()
    return base64.b64encode(hmac.new(client_secret.encode(), message, hashlib.sha256).digest()).decode()


def verify_hubspot_signature(
    method: str,
    uris: list[str],
    payload: bytes,
    signature_header: str | None,
    timestamp_header: str | None,
    client_secret: str,
    *,
    tolerance_seconds: int = HUBSPOT_TOLERANCE_SECONDS,
    clock: Clock = time.time,
) -> None:
    """Verify HubSpot's v3 request signature over the raw body.

    Args:
        method: the HTTP method of the delivery (``POST``).
        uris: the full target URI(s) the delivery may have been signed for (the configured public URL,
            or the URL as received); each is also tried with HubSpot's listed escapes decoded.
        payload: the raw request body, byte for byte.
        signature_header: ``X-HubSpot-Signature-v3`` (base64).
        timestamp_header: ``X-HubSpot-Request-Timestamp`` (epoch milliseconds).
        client_secret: the app's client secret.
        tolerance_seconds: the oldest timestamp accepted (HubSpot: 5 minutes).
        clock: returns the current Unix time in seconds.

    Raises:
        WebhookSignatureError: missing headers, a stale timestamp, or no URI variant matches.
    """
    key = _require_secret(client_secret, "HubSpot app client secret (webhook_client_secret)")
    if not signature_header or not timestamp_header:
        raise WebhookSignatureError("missing X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp header")
    stamp = timestamp_header.strip()
    if not stamp.isdigit():
        raise WebhookSignatureError("X-HubSpot-Request-Timestamp is not epoch milliseconds")
    variants: list[str] = []
    for uri in uris:
        for variant in (uri, _HUBSPOT_ESCAPE.sub(lambda m: _HUBSPOT_DECODED[m.group(0).upper()], uri)):
            if variant and variant not in variants:
                variants.append(variant)
    given = signature_header.strip().encode()
    matched = False
    for variant in variants:
        expected = hubspot_signature_v3(method, variant, payload, stamp, key.decode()).encode()
        if hmac.compare_digest(expected, given):
            matched = True
    if not matched:
        raise WebhookSignatureError(
            "HubSpot X-HubSpot-Signature-v3 does not match (wrong client secret, altered body or a target URL "
            "other than the one HubSpot called: set webhook_url)"
        )
    if tolerance_seconds > 0 and int(stamp) / 1000 < clock() - tolerance_seconds:
        raise WebhookSignatureError(
            f"HubSpot request timestamp is older than the {tolerance_seconds} s tolerance (possible replay)"
        )


# --- Intercom and Segment: hex HMAC-SHA1 of the raw body -----------------------------------------


def hmac_sha1_hex(payload: bytes, secret: str) -> str:
    """Hex HMAC-SHA1 of ``payload`` (Intercom's ``X-Hub-Signature`` after ``sha1=``, Segment's ``X-Signature``)."""
    return _hmac_hex(secret.encode(), payload, hashlib.sha1)


def verify_intercom_signature(payload: bytes, signature_header: str | None, client_secret: str) -> None:
    """Verify Intercom's ``X-Hub-Signature: sha1=<hex HMAC-SHA1(client_secret, body)>``.

    Raises:
        WebhookSignatureError: missing or malformed header, or mismatch.
    """
    key = _require_secret(client_secret, "Intercom app client secret (webhook_secret)")
    if not signature_header:
        raise WebhookSignatureError("missing X-Hub-Signature header")
    scheme, sep, hex_sig = signature_header.strip().partition("=")
    if not sep or scheme.lower() != "sha1":
        raise WebhookSignatureError("malformed X-Hub-Signature header: expected sha1=<hex>")
    if not _any_matches(_hmac_hex(key, payload, hashlib.sha1), [hex_sig]):
        raise WebhookSignatureError(
            "Intercom X-Hub-Signature does not match the payload (wrong secret or altered body)"
        )


def verify_segment_signature(payload: bytes, signature_header: str | None, shared_secret: str) -> None:
    """Verify Segment's ``X-Signature`` (hex HMAC-SHA1 of the raw body with the shared secret).

    Raises:
        WebhookSignatureError: missing header or mismatch.
    """
    key = _require_secret(shared_secret, "Segment shared secret (shared_secret)")
    if not signature_header or not signature_header.strip():
        raise WebhookSignatureError("missing X-Signature header")
    if not _any_matches(_hmac_hex(key, payload, hashlib.sha1), [signature_header]):
        raise WebhookSignatureError("Segment X-Signature does not match the payload (wrong secret or altered body)")
