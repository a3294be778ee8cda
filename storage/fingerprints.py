"""Fingerprints of records: what tells an upsert that a record is unchanged, so it is not written at all.

A stored fingerprint is three 16-hex parts: the record's own fields, its subscriptions, its contacts. A
record that does not report subscriptions or contacts keeps the stored part.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from funnelsync.records import ContactRecord, SourceCustomerRecord, SubscriptionFact
from storage.types import to_epoch_us

_NONE_PART = "-" * 16


def _digest(value: Any) -> str:
    return hashlib.blake2b(repr(value).encode(), digest_size=8).hexdigest()


def epoch_us_or_none(value: datetime | None) -> int | None:
    return None if value is None else to_epoch_us(value)


def profile_part(rec: SourceCustomerRecord, lead_us: int | None | bool = False,
                 trial_us: int | None | bool = False) -> str:
    """Digest of the record's own fields (raw payload excluded: it does not change what we know).

    ``lead_us`` / ``trial_us`` are the dates as epoch microseconds when the caller has them already.
    """
    return _digest((
        rec.name, rec.email, rec.company, rec.country, rec.state, rec.city, rec.zip, rec.website_url,
        rec.owner, rec.lead_status,
        epoch_us_or_none(rec.lead_created_at) if lead_us is False else lead_us,
        epoch_us_or_none(rec.free_trial_started_at) if trial_us is False else trial_us,
        tuple(rec.tags) if rec.tags else (),
        sorted((k, repr(v)) for k, v in rec.custom.items()) if rec.custom else [],
    ))


def subscriptions_part(subs: Sequence[SubscriptionFact] | None) -> str | None:
    """Digest of the subscription facts, None when the record does not report them."""
    if subs is None:
        return None
    if not subs:
        return _EMPTY_PART
    return _digest(_sorted([
        (s.external_id, s.state, epoch_us_or_none(s.trial_started_at), epoch_us_or_none(s.trial_ended_at),
         epoch_us_or_none(s.first_paid_at), epoch_us_or_none(s.cancelled_at)) for s in subs
    ]))


def contacts_part(items: Sequence[ContactRecord] | None) -> str | None:
    """Digest of the contacts, None when the record does not report them."""
    if items is None:
        return None
    if not items:
        return _EMPTY_PART
    return _digest(_sorted([
        (c.key(), c.first_name, c.last_name, c.title, c.email, c.phone, c.linked_in, c.twitter, c.notes,
         sorted((k, repr(v)) for k, v in c.custom.items()), c.position) for c in items
    ]))


def _sorted(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Tuples whose items may be None, sorted with None before any value and values in their own order.

    Plain tuple comparison raised TypeError when two items reported with one id (a source repeating a
    subscription) differed only where one had a date and the other None. Where it worked, this key
    orders the same way, so stored fingerprints stay valid. One item (the common case) is not sorted.
    """
    if len(items) > 1:
        items.sort(key=lambda values: tuple((v is not None, v) for v in values))
    return items


# The digest of an empty set of subscriptions or contacts (what ``_digest(sorted([]))`` gives), computed
# once: most records of a file with a subscription column report none.
_EMPTY_PART = _digest([])


def combine_fingerprint(profile: str, subs: str | None, contacts_fp: str | None, stored: str | None) -> str:
    """The stored fingerprint: three 16-hex parts; a part a record does not report keeps the stored one."""
    old_subs = stored[16:32] if stored else _NONE_PART
    old_contacts = stored[32:48] if stored else _NONE_PART
    return profile + (subs if subs is not None else old_subs) + (
        contacts_fp if contacts_fp is not None else old_contacts
    )
