"""Segment (push only): ``identify`` and ``group`` calls, from a Webhooks destination or any sender of
Segment's HTTP tracking API.

Segment has no "list users" API, so nothing is pulled. Calls come two ways, to the same rules:

- a Segment **Webhooks destination** posts each call (or a ``{"batch": [...]}`` of calls) to
  ``POST /webhooks/NAME``, signed with ``X-Signature`` = hex HMAC-SHA1(shared secret, raw body)
  (``connectors.signatures.verify_segment_signature``);
- Segment's and RudderStack's SDKs (and any Segment-compatible sender) post the **tracking API** to
  ``POST {host}/v1/batch`` (or ``/v1/identify``, ``/v1/group``, …) with the write key as the HTTP Basic
  user name and an empty password (or, without that header, the ``writeKey`` property of the body), the
  body gzipped when the SDK says ``Content-Encoding: gzip``; their
  host set to ``https://HOST/segment/NAME`` lands at ``POST /segment/NAME/v1/…``, checked against the
  source's ``write_key``.

A source may have a write key, a shared secret, or both. This module is the pure part: calls in, one
partial record per customer out. The receiver (``api/webhooks.py``) completes each partial record with
what the source said before, then upserts.

Rules:

- ``create_on=identify`` (default; B2C or per-user products): an ``identify`` creates or updates the
  record keyed by ``userId`` (else ``traits.email``); a ``group`` call adds its company
  (``traits.name``, ``traits.website``) to the record of its ``userId`` if that record exists.
- ``create_on=group`` (B2B: accounts are customers): a ``group`` call creates or updates the record keyed
  by ``groupId``; ``identify`` calls are acknowledged and ignored (they carry no account).
- lead and trial dates are NOT imported from Segment (``traits.createdAt`` is ignored).
- Calls with neither key (anonymous visitors) and other call types (``track``, ``page``, ``screen``,
  ``alias``) are acknowledged and skipped. A body that is not Segment calls is refused (422).
"""

from __future__ import annotations

import hmac
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from connectors.base import Feed, SettingsError, SourceKind
from connectors.files.cells import convert_email
from connectors.push import (
    SEGMENT_TRACKING,
    WEBHOOK,
    PartialRecord,
    WebhookContext,
    WebhookDelivery,
    WebhookReceiver,
    json_body,
)
from connectors.signatures import (
    WebhookPayloadError,
    WebhookSecretMissing,
    WebhookSignatureError,
    basic_auth_user,
    verify_segment_signature,
)
from funnelsync.normalize import clean_text

CREATE_ON = ("identify", "group")
KNOWN_TYPES = frozenset({"identify", "group", "track", "page", "screen", "alias"})
# Fields a Segment call can set on a record (lead and trial dates never).
FIELDS = ("name", "email", "company", "country", "state", "city", "zip", "website_url")
# Segment's tracking API takes at most 500 KB a batch; a gzipped body may not inflate past twice that.
MAX_INFLATED_BYTES = 1024 * 1024


class SegmentPayloadError(ValueError):
    """The body is not Segment calls (HTTP 422; nothing stored)."""


@dataclass
class SegmentDelivery:
    """The calls of one delivery, folded per record, and counts of what was skipped."""

    calls: list[str] = field(default_factory=list)
    # Keyed by ``userId``/email (identify mode) or ``groupId`` (group mode); ``creates`` is True once a
    # call of the creating type was seen, else the change applies only to an existing record.
    changes: dict[str, PartialRecord] = field(default_factory=dict)
    skipped: int = 0


def split_calls(payload: Any) -> list[dict[str, Any]]:
    """The calls of a body: one call object, or ``{"batch": [call, ...]}``.

    Raises:
        SegmentPayloadError: not an object, a batch that is not a list of objects, or a call without a
            known ``type``.
    """
    if not isinstance(payload, dict):
        raise SegmentPayloadError("Segment body must be a JSON object (a call or {\"batch\": [...]})")
    calls = payload.get("batch", [payload])
    if not isinstance(calls, list) or not calls:
        raise SegmentPayloadError("Segment batch must be a non-empty list of calls")
    for index, call in enumerate(calls, 1):
        if not isinstance(call, dict):
            raise SegmentPayloadError(f"Segment call {index} is not an object")
        if call.get("type") not in KNOWN_TYPES:
            raise SegmentPayloadError(f"Segment call {index} has no known type (got {call.get('type')!r})")
        traits = call.get("traits")
        if traits is not None and not isinstance(traits, dict):
            raise SegmentPayloadError(f"Segment call {index}: traits must be an object")
    return calls


def verify_write_key(authorization: str | None, write_key: str, body_key: Any = None) -> None:
    """Check a tracking API request's write key against the source's: the HTTP Basic user name, or, when
    the request has no ``Authorization`` header, the ``writeKey`` property of its body (Segment's
    "writeKey authentication").

    Raises:
        WebhookSignatureError: the source has no write key, the request none or another one.
    """
    if not write_key:
        raise WebhookSecretMissing("this Segment source has no write_key setting: its tracking API is off")
    sent = basic_auth_user(authorization) if authorization else body_key
    if not isinstance(sent, str) or not sent:
        raise WebhookSignatureError("missing write key (HTTP Basic user name, or writeKey in the body)")
    if not hmac.compare_digest(sent.encode(), write_key.encode()):
        raise WebhookSignatureError("invalid Segment write key")


def inflate(body: bytes, content_encoding: str | None) -> bytes:
    """The body as JSON bytes: gunzipped when the sender says ``Content-Encoding: gzip`` (RudderStack's
    SDK always does, Segment's with ``gzip=True``), bounded so a small body cannot inflate without end.

    Raises:
        WebhookPayloadError: not gzip, another encoding, or inflating past ``MAX_INFLATED_BYTES``.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding != "gzip":
        raise WebhookPayloadError(f"Segment request Content-Encoding {encoding!r} is not supported (gzip or none)")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, MAX_INFLATED_BYTES + 1)
    except zlib.error:
        raise WebhookPayloadError("Segment request says gzip but its body is not gzip data") from None
    if len(data) > MAX_INFLATED_BYTES or inflater.unconsumed_tail:
        raise WebhookPayloadError(f"Segment request inflates past {MAX_INFLATED_BYTES} bytes")
    return data


def tracking_calls(payload: Any, call: str) -> list[dict[str, Any]]:
    """The calls of a tracking API request to ``/v1/<call>``: a batch, or one call whose type the path names.

    Raises:
        SegmentPayloadError: an unknown call path, a call whose ``type`` contradicts its path, or what
            ``split_calls`` refuses.
    """
    if call == "batch":
        if not isinstance(payload, dict) or "batch" not in payload:
            raise SegmentPayloadError("Segment /v1/batch body must be an object with a batch list")
        return split_calls(payload)
    if call not in KNOWN_TYPES:
        raise SegmentPayloadError(f"Segment tracking API has no /v1/{call} (batch or a call type)")
    if not isinstance(payload, dict):
        raise SegmentPayloadError(f"Segment /v1/{call} body must be a JSON object")
    if payload.get("type", call) != call:
        raise SegmentPayloadError(f"Segment /v1/{call} body says type {payload.get('type')!r}")
    return split_calls({**payload, "type": call})


def _text(value: Any, what: str, index: int) -> str | None:
    if value is None or isinstance(value, (dict, list, bool)):
        if isinstance(value, (dict, list, bool)):
            raise SegmentPayloadError(f"Segment call {index}: {what} must be a string")
        return None
    return clean_text(value)


def _email(value: Any, what: str, index: int) -> str | None:
    """An email trait, or None when it is not an address: apps send "n/a" or a name here, and a value that
    is no address would only pollute matching by email. The call itself still counts (by userId)."""
    text = _text(value, what, index)
    if text is None:
        return None
    try:
        return convert_email(text)
    except ValueError:
        return None


def _country(value: Any) -> str | None:
    text = clean_text(value)
    return text.upper() if text and len(text) == 2 and text.isalpha() else None


def identify_fields(traits: Mapping[str, Any], index: int) -> dict[str, Any]:
    """Record fields from identify traits (camelCase and snake_case reserved traits both read)."""
    name = _text(traits.get("name"), "traits.name", index)
    if not name:
        first = _text(traits.get("firstName") or traits.get("first_name"), "traits.firstName", index)
        last = _text(traits.get("lastName") or traits.get("last_name"), "traits.lastName", index)
        name = " ".join(p for p in (first, last) if p) or None
    company = traits.get("company")
    company_name = _text(company.get("name"), "traits.company.name", index) if isinstance(company, dict) else _text(
        company, "traits.company", index
    )
    raw_address = traits.get("address")
    address: Mapping[str, Any] = raw_address if isinstance(raw_address, dict) else {}
    return {
        "name": name,
        "email": _email(traits.get("email"), "traits.email", index),
        "company": company_name,
        "website_url": _text(traits.get("website"), "traits.website", index),
        "country": _country(address.get("country")),
        "state": clean_text(address.get("state")),
        "city": clean_text(address.get("city")),
        "zip": clean_text(address.get("postalCode") or address.get("postal_code")),
    }


def call_traits(call: Mapping[str, Any]) -> dict[str, Any]:
    """A call's traits: ``traits``, over ``context.traits`` (where RudderStack's SDKs put an identify's
    traits, and Segment's spec allows them)."""
    context = call.get("context")
    nested = context.get("traits") if isinstance(context, dict) else None
    return {**(nested if isinstance(nested, dict) else {}), **(call.get("traits") or {})}


def fold_calls(calls: Iterable[dict[str, Any]], create_on: str = "identify") -> SegmentDelivery:
    """Fold a delivery's calls into one change per record, in call order (later non-empty values win).

    Raises:
        SegmentPayloadError: a trait of the wrong type (an object where a string belongs).
    """
    if create_on not in CREATE_ON:
        raise ValueError(f"segment create_on must be one of {', '.join(CREATE_ON)}, got {create_on!r}")
    delivery = SegmentDelivery()
    for index, call in enumerate(calls, 1):
        kind = str(call["type"])
        delivery.calls.append(kind)
        traits = call_traits(call)
        user_id = _text(call.get("userId"), "userId", index)
        if kind == "identify" and create_on == "identify":
            fields = identify_fields(traits, index)
            key = user_id or (fields["email"].lower() if fields["email"] else None)
            creates = True
        elif kind == "group":
            group_id = _text(call.get("groupId"), "groupId", index)
            name = _text(traits.get("name"), "traits.name", index)
            fields = {"company": name, "website_url": _text(traits.get("website"), "traits.website", index)}
            if create_on == "group":
                fields.update(name=name, email=_email(traits.get("email"), "traits.email", index))
                key, creates = group_id, True
            else:
                key, creates = user_id, False
        else:
            delivery.skipped += 1
            continue
        if not key:
            delivery.skipped += 1  # an anonymous call: nothing to key a record on
            continue
        change = delivery.changes.setdefault(key, PartialRecord(key, creates=False))
        change.fields.update({k: v for k, v in fields.items() if v is not None})
        change.creates = change.creates or creates
        if kind == "group" and create_on == "identify" and call.get("groupId"):
            change.custom["segment_group_id"] = str(call["groupId"])
    return delivery


class SegmentSource(SourceKind, WebhookReceiver):
    """A Segment Webhooks destination: pushes only (Segment has no list of users to pull)."""

    kind = "segment"
    title = "Segment"
    feeds = frozenset({Feed.PUSHED})
    endpoints: ClassVar[frozenset[str]] = frozenset({WEBHOOK, SEGMENT_TRACKING})

    @classmethod
    def parse_delivery(
        cls,
        endpoint: str,
        settings: Mapping[str, Any],
        headers: Mapping[str, str],
        body: bytes,
        context: WebhookContext,
    ) -> WebhookDelivery:
        """A Webhooks-destination delivery, or a tracking API request (``context.call``: its path's call)."""
        if endpoint != SEGMENT_TRACKING:
            return super().parse_delivery(endpoint, settings, headers, body, context)
        write_key = str(settings.get("write_key") or "")
        authorization = headers.get("authorization")
        if authorization:
            verify_write_key(authorization, write_key)
            payload = json_body(inflate(body, headers.get("content-encoding")), "Segment")
        else:
            # The key is in the body: a body that cannot be read proves nothing (401, not 422).
            try:
                payload = json_body(inflate(body, headers.get("content-encoding")), "Segment")
            except WebhookPayloadError:
                payload = None
            verify_write_key(None, write_key, payload.get("writeKey") if isinstance(payload, dict) else None)
        return cls._deliver(settings, tracking_calls(payload, context.call))

    @classmethod
    def _deliver(cls, settings: Mapping[str, Any], calls: list[dict[str, Any]]) -> WebhookDelivery:
        create_on = str(settings.get("create_on") or "identify")
        if create_on not in CREATE_ON:
            raise SettingsError(f"segment setting create_on={create_on!r}: expected identify or group")
        delivery = fold_calls(calls, create_on)
        return WebhookDelivery(delivery.calls, partials=list(delivery.changes.values()), skipped=delivery.skipped)

    @classmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """Calls signed with ``X-Signature``, folded into one partial record per customer."""
        verify_segment_signature(body, headers.get("x-signature"), str(settings.get("shared_secret") or ""))
        return cls._deliver(settings, split_calls(json_body(body, "Segment")))
