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

from funnelsync.records import PROFILE_FIELDS, REPORTABLE_FIELDS, SourceCustomerRecord
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


def complete(prepared: PreparedRecord, stored: Sequence[Any]) -> PreparedRecord:
    """``prepared`` (a partial record found stored) as the whole record: stored values where it reports none.

    Args:
        prepared: a record whose ``present`` is not None.
        stored: its source customer's ``STORED_COLUMNS``.
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
    # Subscriptions and contacts are reported whole or not at all (None): the record's own parts stand.
    return whole._replace(subs_fp=p.subs_fp, contacts_fp=p.contacts_fp, contacts=p.contacts,
                          subscriptions=p.subscriptions)
