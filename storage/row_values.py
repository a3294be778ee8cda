"""A record turned into the values of its rows (pure): fingerprint parts, the source customer, the new
customer's projection, its subscriptions and filter rows.

Everything here depends on the record alone, so a bulk job computes it where the records are produced
(a file's reader process) and the writing process only looks up, stamps ids and writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from funnelsync.attributes import type_of as attribute_type
from funnelsync.normalize import normalize_email, website_domain
from funnelsync.records import LEAD_STATUSES, ContactRecord, SourceCustomerRecord
from funnelsync.status import DEFAULT_LEAD_STATUS, derive_status
from storage.fingerprints import contacts_part, epoch_us_or_none, profile_part, subscriptions_part
from storage.ids import new_uuid
from storage.projection import jsonable_custom
from storage.types import to_epoch_us
from storage.writers import json_text


def new_customer_row(
    rec: SourceCustomerRecord, customer_id: int, now: datetime, public_id: str | None = None,
    email_norm: str | None | bool = False,
) -> dict[str, Any]:
    """The projection of a customer whose only source customer is ``rec`` and who has no edits.

    Equal to ``project([fields of rec], its subscriptions, {})`` (a test holds them equal), written
    out because it runs once per new record of every first import.
    """
    subs = rec.subscriptions or ()
    if subs:
        paid = [s.first_paid_at for s in subs if s.first_paid_at is not None]
        status = derive_status([(s.state, s.first_paid_at is not None) for s in subs], rec.lead_status)
    else:
        paid = []
        status = rec.lead_status if rec.lead_status in LEAD_STATUSES else DEFAULT_LEAD_STATUS
    tags = list(dict.fromkeys(rec.tags)) if rec.tags else []
    return {
        "id": customer_id, "uuid": public_id or new_uuid("cus"), "created_at": now, "updated_at": now,
        "name": rec.name or None, "email": rec.email or None, "company": rec.company or None,
        "country": rec.country or None, "state": rec.state or None, "city": rec.city or None,
        "zip": rec.zip or None, "website_url": rec.website_url or None, "owner": rec.owner or None,
        "lead_status": rec.lead_status or None,
        "email_norm": normalize_email(rec.email) if email_norm is False else email_norm,
        "website_domain": website_domain(rec.website_url) if rec.website_url else None,
        "status": status,
        "lead_created_at": rec.lead_created_at, "free_trial_started_at": rec.free_trial_started_at,
        "subscriber_since": min(paid) if paid else None,
        "tags": tags, "custom": jsonable_custom(rec.custom), "has_subscriptions": bool(subs),
    }


class PreparedRecord(NamedTuple):
    """A record turned into the values its rows are written with, all but ids and time stamps.

    Everything here depends on the record alone, so it can be computed where the record is produced,
    in another process (``PreparedBatch`` crosses it as plain tuples).
    Values are converted for one dialect (``sqlite``: times as epoch microseconds, else datetimes).
    Prepared lazily (``eager=False``), the row values and the normalised email wait in ``source`` until
    the upsert finds the record new or changed: an unchanged record needs only its fingerprint.
    """

    external_id: str
    email: str | None
    email_norm: str | None
    profile_fp: str
    subs_fp: str | None
    contacts_fp: str | None
    sqlite: bool
    contacts: list[ContactRecord] | None
    # SC_COLUMNS from the profile fields to ``raw``.
    sc_values: tuple[Any, ...] = ()
    # The projection of a customer with only this record: CUSTOMER_COLUMNS after id, uuid and the time
    # stamps; on SQLite only CUSTOMER_OWN_COLUMNS (the rest is copied from the source customer's row).
    customer_values: tuple[Any, ...] = ()
    # SUB_COLUMNS between the source customer id and ``updated_at``, one per subscription (the last of
    # a repeated external id); None when the record does not report subscriptions.
    subscriptions: list[tuple[Any, ...]] | None = None
    # (tags, custom) for the filter tables when the record has either.
    filter_values: tuple[list[str], dict[str, Any]] | None = None
    custom_types: tuple[tuple[str, str], ...] | None = None
    # The digest of the file row the record was read from (jobs/imports.py), else None.
    row_fp: str | None = None
    source: SourceCustomerRecord | None = None
    # ``SourceCustomerRecord.present``: the fields the record reports (None: all).
    present: frozenset[str] | None = None

    def complete(self) -> PreparedRecord:
        """This record with its row values (a lazily prepared one gets them computed now)."""
        if self.source is None:
            return self
        email_norm = normalize_email(self.source.email)
        return _new_tuple(PreparedRecord, self[:2] + (email_norm,) + self[3:_VALUES_AT]
                          + _row_values(self.source, self.sqlite, email_norm) + (self.row_fp, None, self.present))


_new_tuple = tuple.__new__


_VALUES_AT = PreparedRecord._fields.index("sc_values")


class PreparedBatch(list[PreparedRecord]):
    """Prepared records that pickle as plain tuples.

    Pickling a NamedTuple, or a slotted object, calls Python code for every record on both sides
    on both sides; a list of plain tuples is pickled and loaded in C, and the
    records are rebuilt with ``tuple.__new__``.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return _restore_batch, ([tuple(p) for p in self],)


def _restore_batch(rows: list[tuple[Any, ...]]) -> PreparedBatch:
    return PreparedBatch([_new_tuple(PreparedRecord, row) for row in rows])


def prepare_records(records: Iterable[SourceCustomerRecord], *, sqlite: bool, eager: bool = True,
                    row_fps: Sequence[str | None] | None = None) -> PreparedBatch:
    """``prepare_record`` of each record, in order (repeated external ids are kept: the upsert keeps the last).

    ``row_fps``: the file row digest of each record (see ``PreparedRecord.row_fp``). Public ids are made
    by the upsert, for the new customers only: in bulk, where the writing process would otherwise wait
    for this one (a first import: the parsing side is the busier), it costs less there.
    """
    if row_fps is None:
        return PreparedBatch([prepare_record(rec, sqlite, eager) for rec in records])
    return PreparedBatch([prepare_record(rec, sqlite, eager, fp) for rec, fp in zip(records, row_fps, strict=True)])


def prepare_record(rec: SourceCustomerRecord, sqlite: bool, eager: bool = True,
                   row_fp: str | None = None) -> PreparedRecord:
    """The fingerprint parts of ``rec`` and, ``eager`` or once completed, its row values (``PreparedRecord``)."""
    subs = rec.subscriptions
    subs_fp = None if subs is None else subscriptions_part(subs)
    contacts_fp = None if rec.contacts is None else contacts_part(rec.contacts)
    if not eager:
        # One tuple, and no normalised email yet: an unchanged record (most of a re-sync) needs neither.
        return _new_tuple(PreparedRecord, (rec.external_id, rec.email, None, profile_part(rec), subs_fp, contacts_fp,
                                           sqlite, rec.contacts, (), (), None, None, None, row_fp, rec,
                                           rec.present))
    email_norm = normalize_email(rec.email)
    lead_us, trial_us = epoch_us_or_none(rec.lead_created_at), epoch_us_or_none(rec.free_trial_started_at)
    return _new_tuple(PreparedRecord, (rec.external_id, rec.email, email_norm, profile_part(rec, lead_us, trial_us),
                                       subs_fp, contacts_fp, sqlite, rec.contacts)
                      + _row_values(rec, sqlite, email_norm, lead_us, trial_us) + (row_fp, None, rec.present))


def _row_values(rec: SourceCustomerRecord, sqlite: bool, email_norm: str | None,
                lead_us: int | None | bool = False, trial_us: int | None | bool = False) -> tuple[Any, ...]:
    """The row values of ``rec``: ``PreparedRecord`` from ``sc_values`` to ``custom_types``.

    The customer values equal ``new_customer_row`` (on SQLite its ``CUSTOMER_OWN_COLUMNS``) and the
    source customer values the columns ``_row_builder`` makes of the record (a test holds them equal),
    written out because this runs for every record of a million-row import.
    """
    subs = rec.subscriptions
    since: Any = None
    sub_values: list[tuple[Any, ...]] | None = None
    if subs:
        paid = [s.first_paid_at for s in subs if s.first_paid_at is not None]
        status = derive_status([(s.state, s.first_paid_at is not None) for s in subs], rec.lead_status)
        if paid:
            since = to_epoch_us(min(paid)) if sqlite else min(paid)
        last = {s.external_id: s for s in subs}
        if sqlite:
            sub_values = [(s.external_id, s.state, epoch_us_or_none(s.trial_started_at),
                           epoch_us_or_none(s.trial_ended_at), epoch_us_or_none(s.first_paid_at),
                           epoch_us_or_none(s.cancelled_at)) for s in last.values()]
        else:
            sub_values = [(s.external_id, s.state, s.trial_started_at, s.trial_ended_at, s.first_paid_at,
                           s.cancelled_at) for s in last.values()]
    else:
        status = rec.lead_status if rec.lead_status in LEAD_STATUSES else DEFAULT_LEAD_STATUS
        if subs is not None:
            sub_values = []
    lead_v: Any = rec.lead_created_at
    trial_v: Any = rec.free_trial_started_at
    if sqlite:
        # As epoch microseconds, which the caller may have computed already (as for ``profile_part``).
        lead_v = epoch_us_or_none(lead_v) if lead_us is False else lead_us
        trial_v = epoch_us_or_none(trial_v) if trial_us is False else trial_us
    custom = jsonable_custom(rec.custom) if rec.custom else {}
    custom_text = json_text(custom) if custom else "{}"
    tags = list(dict.fromkeys(rec.tags)) if rec.tags else []
    domain = website_domain(rec.website_url) if rec.website_url else None
    tags_text = json_text(tags) if tags else "[]"
    if sqlite:
        customer: tuple[Any, ...] = (domain, status, since, tags_text, bool(subs))
    else:
        customer = (rec.name or None, rec.email or None, rec.company or None, rec.country or None,
                    rec.state or None, rec.city or None, rec.zip or None, rec.website_url or None, rec.owner or None,
                    rec.lead_status or None, email_norm, domain, status, lead_v, trial_v, since, tags_text,
                    custom_text, bool(subs))
    return (
        (rec.name, rec.email, rec.company, rec.country, rec.state, rec.city, rec.zip, rec.website_url,
         rec.owner, rec.lead_status, email_norm, lead_v, trial_v,
         json_text(rec.tags) if rec.tags else "[]", custom_text,
         None if rec.raw is None else json_text(rec.raw)),
        customer,
        sub_values,
        (tags, custom) if rec.tags or rec.custom else None,
        tuple((k, attribute_type(v)) for k, v in rec.custom.items()) if rec.custom else None,
    )


def _record_fields(rec: SourceCustomerRecord) -> dict[str, Any]:
    return {
        "name": rec.name, "email": rec.email, "company": rec.company, "country": rec.country,
        "state": rec.state, "city": rec.city, "zip": rec.zip, "website_url": rec.website_url,
        "owner": rec.owner, "lead_status": rec.lead_status, "lead_created_at": rec.lead_created_at,
        "free_trial_started_at": rec.free_trial_started_at, "tags": rec.tags, "custom": rec.custom,
    }
