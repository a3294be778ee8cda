"""Webhook signature verification: official vectors where published, computed vectors otherwise.

Each scheme is checked for: good signature, tampered body, wrong secret, stale timestamp (where the
scheme has one) and malformed header. The expected HMACs are recomputed here with hashlib/hmac, not
with the helpers under test, so a wrong helper cannot agree with itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pytest

from connectors.signatures import (
    WebhookPayloadError,
    WebhookSignatureError,
    braintree_challenge_response,
    parse_braintree_notification,
    verify_basic_auth,
    verify_braintree_signature,
    verify_gocardless_signature,
    verify_recurly_signature,
    verify_stripe_signature,
)

PAYLOADS = Path(__file__).parent / "fixtures" / "payloads"
NOW = 1_700_000_000.0


def clock() -> float:
    return NOW


# --- Stripe ---------------------------------------------------------------------------------------

STRIPE_SECRET = "whsec_test_secret"
STRIPE_BODY = b'{"id":"evt_1","object":"event","type":"customer.created","data":{"object":{"id":"cus_1"}}}'


def stripe_header(body: bytes, secret: str, t: int) -> str:
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}"


def test_stripe_good_signature_returns_timestamp() -> None:
    header = stripe_header(STRIPE_BODY, STRIPE_SECRET, int(NOW) - 10)
    assert verify_stripe_signature(STRIPE_BODY, header, STRIPE_SECRET, clock=clock) == int(NOW) - 10


def test_stripe_any_v1_may_match_during_rotation() -> None:
    good = stripe_header(STRIPE_BODY, STRIPE_SECRET, int(NOW)).split(",")[1]
    header = f"t={int(NOW)},v1={'0' * 64},{good},v0=ignored"
    verify_stripe_signature(STRIPE_BODY, header, STRIPE_SECRET, clock=clock)


@pytest.mark.parametrize(
    ("body", "secret", "t", "fragment"),
    [
        (STRIPE_BODY + b" ", STRIPE_SECRET, int(NOW), "does not match"),  # tampered body
        (STRIPE_BODY, "whsec_other", int(NOW), "does not match"),  # wrong secret
        (STRIPE_BODY, STRIPE_SECRET, int(NOW) - 301, "older than the 300 s"),  # stale
    ],
)
def test_stripe_rejects(body: bytes, secret: str, t: int, fragment: str) -> None:
    header = stripe_header(STRIPE_BODY, secret, t)
    with pytest.raises(WebhookSignatureError, match=fragment):
        verify_stripe_signature(body, header, STRIPE_SECRET, clock=clock)


def test_stripe_tolerance_is_configurable() -> None:
    header = stripe_header(STRIPE_BODY, STRIPE_SECRET, int(NOW) - 301)
    verify_stripe_signature(STRIPE_BODY, header, STRIPE_SECRET, tolerance_seconds=600, clock=clock)


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", f"t=abc,v1={'a' * 64}", f"v1={'a' * 64}", f"t={int(NOW)}", f"t={int(NOW)},v0=abc"],
)
def test_stripe_malformed_header(header: str | None) -> None:
    with pytest.raises(WebhookSignatureError):
        verify_stripe_signature(STRIPE_BODY, header, STRIPE_SECRET, clock=clock)


def test_stripe_error_never_contains_secret_or_expected_signature() -> None:
    header = stripe_header(STRIPE_BODY, "whsec_other", int(NOW))
    expected = stripe_header(STRIPE_BODY, STRIPE_SECRET, int(NOW)).split("v1=")[1]
    with pytest.raises(WebhookSignatureError) as info:
        verify_stripe_signature(STRIPE_BODY, header, STRIPE_SECRET, clock=clock)
    assert STRIPE_SECRET not in str(info.value) and expected not in str(info.value)


def test_missing_secret_is_refused() -> None:
    header = stripe_header(STRIPE_BODY, "", int(NOW))
    with pytest.raises(WebhookSignatureError, match="no Stripe webhook signing secret"):
        verify_stripe_signature(STRIPE_BODY, header, "", clock=clock)


# --- Recurly --------------------------------------------------------------------------------------

RECURLY_SECRET = "recurly-endpoint-secret"
RECURLY_BODY = (PAYLOADS / "recurly" / "webhook_new_subscription.json").read_bytes()


def recurly_header(body: bytes, secrets: list[str], ts_ms: int) -> str:
    sigs = [hmac.new(s.encode(), f"{ts_ms}.".encode() + body, hashlib.sha256).hexdigest() for s in secrets]
    return ",".join([str(ts_ms), *sigs])


def test_recurly_good_signature() -> None:
    ts = int(NOW * 1000) - 2_000
    assert (
        verify_recurly_signature(
            RECURLY_BODY, recurly_header(RECURLY_BODY, [RECURLY_SECRET], ts), RECURLY_SECRET, clock=clock
        )
        == ts
    )


def test_recurly_rotation_either_signature_passes() -> None:
    ts = int(NOW * 1000)
    for order in (["old-secret", RECURLY_SECRET], [RECURLY_SECRET, "old-secret"]):
        verify_recurly_signature(
            RECURLY_BODY, recurly_header(RECURLY_BODY, order, ts), RECURLY_SECRET, clock=clock
        )


@pytest.mark.parametrize(
    ("body", "secret", "ts_ms", "fragment"),
    [
        (RECURLY_BODY.replace(b"created", b"canceled"), RECURLY_SECRET, int(NOW * 1000), "does not match"),
        (RECURLY_BODY, "wrong", int(NOW * 1000), "does not match"),
        (RECURLY_BODY, RECURLY_SECRET, int(NOW * 1000) - 301_000, "more than 300 s"),
        (RECURLY_BODY, RECURLY_SECRET, int(NOW * 1000) + 301_000, "more than 300 s"),  # from the future
    ],
)
def test_recurly_rejects(body: bytes, secret: str, ts_ms: int, fragment: str) -> None:
    header = recurly_header(RECURLY_BODY, [secret], ts_ms)
    with pytest.raises(WebhookSignatureError, match=fragment):
        verify_recurly_signature(body, header, RECURLY_SECRET, clock=clock)


@pytest.mark.parametrize("header", [None, "", "1700000000000", "abc,deadbeef", "1700000000000,"])
def test_recurly_malformed_header(header: str | None) -> None:
    with pytest.raises(WebhookSignatureError):
        verify_recurly_signature(RECURLY_BODY, header, RECURLY_SECRET, clock=clock)


# --- GoCardless (official vector) -----------------------------------------------------------------

GC_VECTOR = json.loads((PAYLOADS / "gocardless" / "webhook_signature_vector.json").read_text())
# The vector signs the file's content without its trailing newline (gocardless-pro-python tests).
GC_BODY = (PAYLOADS / "gocardless" / "webhook_body.json").read_bytes().rstrip(b"\n")


def test_gocardless_official_vector() -> None:
    verify_gocardless_signature(GC_BODY, GC_VECTOR["header_value"], GC_VECTOR["secret"])


def test_gocardless_vector_is_what_hmac_sha256_gives() -> None:
    assert (
        hmac.new(GC_VECTOR["secret"].encode(), GC_BODY, hashlib.sha256).hexdigest()
        == GC_VECTOR["header_value"]
    )


@pytest.mark.parametrize(
    ("body", "header", "secret"),
    [
        (GC_BODY + b"\n", GC_VECTOR["header_value"], GC_VECTOR["secret"]),  # one byte more
        (GC_BODY.replace(b"created", b"cancelled", 1), GC_VECTOR["header_value"], GC_VECTOR["secret"]),
        (GC_BODY, GC_VECTOR["header_value"], "ED7D658C-D8EB-4941-948B-000000000000"),  # wrong secret
        (GC_BODY, None, GC_VECTOR["secret"]),
        (GC_BODY, "", GC_VECTOR["secret"]),
        (GC_BODY, "not-hex", GC_VECTOR["secret"]),
    ],
)
def test_gocardless_rejects(body: bytes, header: str | None, secret: str) -> None:
    with pytest.raises(WebhookSignatureError):
        verify_gocardless_signature(body, header, secret)


# --- Braintree ------------------------------------------------------------------------------------

BT_PUBLIC = "integration_public_key"
BT_PRIVATE = "integration_private_key"
BT_XML = b"""<notification>
  <timestamp type="datetime">2026-03-01T08:15:00Z</timestamp>
  <kind>subscription_charged_successfully</kind>
  <subject>
    <subscription>
      <id>sub_bt_1</id>
      <status>Active</status>
      <trial-period type="boolean">true</trial-period>
      <trial-duration type="integer">14</trial-duration>
      <trial-duration-unit>day</trial-duration-unit>
      <first-billing-date type="date">2026-03-01</first-billing-date>
      <created-at type="datetime">2026-02-15T18:00:00Z</created-at>
      <payment-method-token>tok_1</payment-method-token>
      <transactions type="array">
        <transaction>
          <id>txn_1</id>
          <status>submitted_for_settlement</status>
          <amount>49.99</amount>
          <customer><id>bt_cust_1</id></customer>
        </transaction>
      </transactions>
      <add-ons type="array"/>
    </subscription>
  </subject>
</notification>"""
# Like the SDK's sample notifications: base64 with a line break every 76 characters and at the end.
BT_PAYLOAD = base64.encodebytes(BT_XML).decode()


def bt_sig(payload: str, private: str = BT_PRIVATE, public: str = BT_PUBLIC) -> str:
    key = hashlib.sha1(private.encode()).digest()
    return f"{public}|{hmac.new(key, payload.encode(), hashlib.sha1).hexdigest()}"


def test_braintree_official_challenge_vector() -> None:
    # braintree-python tests/unit/test_webhooks.py: the same HMAC scheme as bt_signature.
    assert (
        braintree_challenge_response("20f9f8ed05f77439fe955c977e4c8a53", BT_PUBLIC, BT_PRIVATE)
        == "integration_public_key|d9b899556c966b3f06945ec21311865d35df3ce4"
    )


def test_braintree_bad_challenge() -> None:
    with pytest.raises(WebhookPayloadError):
        braintree_challenge_response("bad challenge", BT_PUBLIC, BT_PRIVATE)


def test_braintree_good_signature_and_parse() -> None:
    signature = f"other_public|{'0' * 40}&{bt_sig(BT_PAYLOAD)}"
    verify_braintree_signature(signature, BT_PAYLOAD, BT_PUBLIC, BT_PRIVATE)
    note = parse_braintree_notification(BT_PAYLOAD)
    assert note.kind == "subscription_charged_successfully"
    assert note.timestamp is not None and note.timestamp.isoformat() == "2026-03-01T08:15:00+00:00"
    assert note.subject_type == "subscription"
    assert note.subject["id"] == "sub_bt_1"
    assert note.subject["trial_period"] is True and note.subject["trial_duration"] == 14
    assert note.subject["transactions"][0]["customer"]["id"] == "bt_cust_1"
    assert note.subject["add_ons"] == []


def test_braintree_payload_with_trailing_newline_is_accepted() -> None:
    # Signed without the final newline, posted with it (the SDK accepts both forms).
    stripped = BT_PAYLOAD.rstrip("\n")
    verify_braintree_signature(bt_sig(stripped), stripped + "\n", BT_PUBLIC, BT_PRIVATE)
    verify_braintree_signature(bt_sig(BT_PAYLOAD), BT_PAYLOAD.rstrip("\n"), BT_PUBLIC, BT_PRIVATE)


@pytest.mark.parametrize(
    ("signature", "payload", "fragment"),
    [
        (
            bt_sig(BT_PAYLOAD),
            base64.encodebytes(BT_XML.replace(b"Active", b"Canceled")).decode(),
            "does not match",
        ),
        (bt_sig(BT_PAYLOAD, private="other_private"), BT_PAYLOAD, "does not match"),
        (bt_sig(BT_PAYLOAD, public="other_public"), BT_PAYLOAD, "no signature for this source's public key"),
        ("garbage", BT_PAYLOAD, "no signature for this source"),
        (None, BT_PAYLOAD, "missing"),
        (bt_sig(BT_PAYLOAD), None, "missing"),
        (bt_sig(BT_PAYLOAD), BT_PAYLOAD + "<xml>", "not base64"),
    ],
)
def test_braintree_rejects(signature: str | None, payload: str | None, fragment: str) -> None:
    with pytest.raises(WebhookSignatureError, match=fragment):
        verify_braintree_signature(signature, payload, BT_PUBLIC, BT_PRIVATE)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ("!!!!", "not valid base64"),
        (base64.b64encode(b"not xml <").decode(), "not well-formed XML"),
        (base64.b64encode(b"<customer><id>1</id></customer>").decode(), "expected <notification>"),
        (base64.b64encode(b"<notification><timestamp>x</timestamp></notification>").decode(), "no <kind>"),
    ],
)
def test_braintree_malformed_payload(payload: str, fragment: str) -> None:
    with pytest.raises(WebhookPayloadError, match=fragment):
        parse_braintree_notification(payload)


# --- Chargebee (HTTP Basic) -----------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_chargebee_basic_good() -> None:
    verify_basic_auth(basic("cb-hook", "s3cr:et"), "cb-hook", "s3cr:et")


@pytest.mark.parametrize(
    "header",
    [
        basic("cb-hook", "wrong"),
        basic("other", "s3cr:et"),
        None,
        "",
        "Bearer abc",
        "Basic !!!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
    ],
)
def test_chargebee_basic_rejects(header: str | None) -> None:
    with pytest.raises(WebhookSignatureError):
        verify_basic_auth(header, "cb-hook", "s3cr:et")


def test_chargebee_basic_without_configured_credentials_rejects() -> None:
    with pytest.raises(WebhookSignatureError, match="no webhook Basic-auth credentials"):
        verify_basic_auth(basic("", ""), "", "")
