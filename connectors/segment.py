"""Segment (push only): ``identify`` and ``group`` calls posted by a Segment Webhooks destination.

Segment has no "list users" API, so nothing is pulled: a Webhooks destination posts each call (or a
``{"batch": [...]}`` of calls) to ``POST /webhooks/NAME``, signed with ``X-Signature`` = hex
HMAC-SHA1(shared secret, raw body) (``connectors.signatures.verify_segment_signature``). This module is
the pure part: calls in, one partial record per customer out. The receiver (``api/webhooks.py``)
completes each partial record with what the source said before, then upserts.

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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from connectors.base import Feed, SettingsError, SourceKind
from connectors.files.cells import convert_email
from connectors.push import PartialRecord, WebhookContext, WebhookDelivery, WebhookReceiver, json_body
from connectors.signatures import verify_segment_signature
from funnelsync.normalize import clean_text

CREATE_ON = ("identify", "group")
KNOWN_TYPES = frozenset({"identify", "group", "track", "page", "screen", "alias"})
# Fields a Segment call can set on a record (lead and trial dates never).
FIELDS = ("name", "email", "company", "country", "state", "city", "zip", "website_url")


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
        traits = call.get("traits") or {}
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

    @classmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """Calls signed with ``X-Signature``, folded into one partial record per customer."""
        verify_segment_signature(body, headers.get("x-signature"), str(settings.get("shared_secret") or ""))
        create_on = str(settings.get("create_on") or "identify")
        if create_on not in CREATE_ON:
            raise SettingsError(f"segment setting create_on={create_on!r}: expected identify or group")
        delivery = fold_calls(split_calls(json_body(body, "Segment")), create_on)
        return WebhookDelivery(delivery.calls, partials=list(delivery.changes.values()), skipped=delivery.skipped)
