"""Records that report only some fields (``SourceCustomerRecord.present``), completed with what is stored.

A file that maps fewer columns than the last one, or leaves a cell empty, says nothing about the other
fields: the source customer keeps them. The upsert reads the stored values of such records with its
lookup of existing keys (``STORED_COLUMNS``) and turns each into the whole record it now stands for, so
the fingerprint that decides "unchanged", the row written and the projection all see the same values.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from funnelsync.records import PROFILE_FIELDS, REPORTABLE_FIELDS, SourceCustomerRecord, SubscriptionFact
from storage.fingerprints import subscriptions_part
from storage.row_values import PreparedRecord, prepare_record
from storage.types import from_epoch_us

# The stored columns a partial record is completed from, in the order of ``PreparedRecord.sc_values``.
STORED_COLUMNS = (*PROFILE_FIELDS, "email_norm", "lead_created_at", "free_trial_started_at", "tags", "custom", "raw")


def _json(value: Any) -> Any:
    # SQLite hands JSON columns back as text, psycopg as Python values; prepared values are text.
    return json.loads(value) if isinstance(value, str) else value


def _record_from(external_id: str, values: Sequence[Any], sqlite: bool) -> SourceCustomerRecord:
    """The record that row values (``sc_values`` or a stored row of ``STORED_COLUMNS``) describe."""
    lead, trial = values[11], values[12]
    if sqlite:
        lead = None if lead is None else from_epoch_us(int(lead))
        trial = None if trial is None else from_epoch_us(int(trial))
    fields = dict(zip(PROFILE_FIELDS, values[:10], strict=True))
    return SourceCustomerRecord(
        external_id, **fields, lead_created_at=lead, free_trial_started_at=trial,
        tags=list(_json(values[13]) or []), custom=dict(_json(values[14]) or {}), raw=_json(values[15]),
    )


def needs_stored_subscriptions(p: PreparedRecord) -> bool:
    """Whether ``p`` reports subscription facts without all their dates (``SUBSCRIPTION_DATES``)."""
    return p.present is not None and p.subs_fp is not None and not SUBSCRIPTION_DATES <= p.present


# The dates of a reported subscription fact a partial record may leave out, by their place in
# ``PreparedRecord.subscriptions`` (external id, state, trial start, trial end, first paid, cancelled).
SUBSCRIPTION_DATES = frozenset({"subscription.first_paid_at", "subscription.cancelled_at"})
STORED_SUBSCRIPTION_COLUMNS = ("external_id", "state", "trial_started_at", "trial_ended_at", "first_paid_at",
                               "cancelled_at")


def complete(prepared: PreparedRecord, stored: Sequence[Any],
             stored_subscriptions: Sequence[Sequence[Any]] = ()) -> PreparedRecord:
    """``prepared`` (a partial record found stored) as the whole record: stored values where it reports none.

    Args:
        prepared: a record whose ``present`` is not None.
        stored: its source customer's ``STORED_COLUMNS``.
        stored_subscriptions: its stored subscriptions (``STORED_SUBSCRIPTION_COLUMNS``), for a record
            that reports subscription facts without some of their dates (``needs_stored_subscriptions``).
    """
    p = prepared.complete()
    assert p.present is not None
    sqlite = p.sqlite
    mine = _record_from(p.external_id, p.sc_values, sqlite)
    merged = _record_from(p.external_id, stored, sqlite)
    for name in REPORTABLE_FIELDS:
        if name in p.present:
            setattr(merged, name, getattr(mine, name))
    for name in p.present:
        if name.startswith("custom."):
            key = name[7:]
            if key in mine.custom:
                merged.custom[key] = mine.custom[key]
            else:
                merged.custom.pop(key, None)
    if mine.raw is not None:
        merged.raw = mine.raw
    whole = prepare_record(merged, sqlite, eager=True, row_fp=p.row_fp)
    subscriptions, subs_fp = p.subscriptions, p.subs_fp
    if stored_subscriptions and needs_stored_subscriptions(p):
        subscriptions = _merged_subscriptions(p.subscriptions or [], stored_subscriptions, p.present)
        subs_fp = subscriptions_part([_fact(values, sqlite) for values in subscriptions])
    # Contacts are reported whole or not at all (None), each keeping its unreported fields when written.
    # The custom types are the reported values' own: read back from the row's JSON, a Timestamp is text.
    return whole._replace(subs_fp=subs_fp, contacts_fp=p.contacts_fp, contacts=p.contacts,
                          subscriptions=subscriptions, custom_types=p.custom_types)


def _merged_subscriptions(reported: list[tuple[Any, ...]], stored: Sequence[Sequence[Any]],
                          present: frozenset[str]) -> list[tuple[Any, ...]]:
    """Reported facts with the stored first-paid / cancellation date (and a cancelled state) they leave out."""
    by_id = {row[0]: row for row in stored}
    merged = []
    for values in reported:
        old = by_id.get(values[0])
        if old is not None:
            row = list(values)
            if "subscription.first_paid_at" not in present:
                row[4] = old[4]
            if "subscription.cancelled_at" not in present and old[5] is not None:
                row[1], row[5] = old[1], old[5]
            values = tuple(row)
        merged.append(values)
    return merged


def _fact(values: Sequence[Any], sqlite: bool) -> SubscriptionFact:
    dates = [None if v is None else (from_epoch_us(int(v)) if sqlite else v) for v in values[2:6]]
    return SubscriptionFact(values[0], values[1], *dates)
