"""Partial records from push-only integrations (Segment, Google Play's payloads URL).

A pushed call says only some fields of a customer (an ``identify`` without an address, a purchase
without a trial date). Upserting it as a whole record would erase what the source said before, so a
push produces a ``PartialRecord`` and the receiver completes it with the source's stored values
(``complete``) before the upsert: fields the call sets win, the rest stay as they were.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from funnelsync.records import SourceCustomerRecord

# What a stored source customer holds that a completed record carries over.
CARRIED = (
    "name", "email", "company", "country", "state", "city", "zip", "website_url", "owner", "lead_status",
    "lead_created_at", "free_trial_started_at",
)


@dataclass
class PartialRecord:
    """What one push says about one source customer.

    Attributes:
        external_id: the key within the source.
        fields: the fields the push sets (only non-empty values).
        custom: custom attributes the push sets (merged into the stored ones).
        creates: whether the push may create the record; False = update an existing record only.
    """

    external_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    creates: bool = True


def complete(partial: PartialRecord, stored: Mapping[str, Any] | None) -> SourceCustomerRecord | None:
    """The whole record: the stored values overlaid with the push's; None when it may not be created.

    Subscriptions and contacts are left as stored (``None``): pushes never report them.
    """
    if stored is None and not partial.creates:
        return None
    values: dict[str, Any] = {name: (stored or {}).get(name) for name in CARRIED}
    values.update(partial.fields)
    custom = dict((stored or {}).get("custom") or {})
    custom.update(partial.custom)
    return SourceCustomerRecord(
        external_id=partial.external_id,
        tags=list((stored or {}).get("tags") or []),
        custom=custom,
        subscriptions=None,
        contacts=None,
        **values,
    )
