"""Import jobs, their rejected rows, keyless-row resolution and per-row fingerprints of sheet imports.

Every file or sheet import is an ``import_jobs`` row whose counters grow with each committed batch, so a
job killed half way shows what it had done; each rejected row is an ``import_rejections`` row (spreadsheet
row number, column, raw value, reason). All writes are batched: one executemany per batch, never one
statement per row.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, select, update

from funnelsync.records import CONTACT_FIELDS, ContactRecord
from storage.ids import new_uuid
from storage.schema import (
    contacts,
    data_sources,
    import_jobs,
    import_rejections,
    import_row_fingerprints,
    source_customers,
)

LOOKUP_CHUNK = 5000


def start_import_job(conn: Connection, data_source_id: int, kind: str, filename: str | None) -> tuple[int, str]:
    """Create a running import job and return its id and ``imp_…`` uuid.

    The job records this process (id and host) and a first heartbeat: if the process dies without
    marking the job, what it leaves shows the job was interrupted (``jobs.import_jobs``).

    Args:
        kind: csv, structured, sheet or bulk_edit.
        filename: the file (or spreadsheet and worksheet) imported, for the record.
    """
    uuid = new_uuid("imp")
    now = datetime.now(timezone.utc)
    conn.execute(
        import_jobs.insert().values(
            uuid=uuid,
            data_source_id=data_source_id,
            kind=kind,
            filename=(filename or "")[:1024] or None,
            status="running",
            created=0,
            updated=0,
            unchanged=0,
            rejected=0,
            started_at=now,
            pid=os.getpid(),
            host=socket.gethostname()[:255],
            heartbeat_at=now,
        )
    )
    job_id = conn.execute(select(import_jobs.c.id).where(import_jobs.c.uuid == uuid)).scalar_one()
    return int(job_id), uuid


def add_job_counts(conn: Connection, job_id: int, counts: Mapping[str, int]) -> None:
    """Add one batch's created/updated/unchanged/rejected counts to the job (committed with the batch),
    and beat its heartbeat: the job's process was alive when this batch committed."""
    values: dict[str, Any] = {
        name: getattr(import_jobs.c, name) + int(counts.get(name, 0))
        for name in ("created", "updated", "unchanged", "rejected")
        if counts.get(name)
    }
    values["heartbeat_at"] = datetime.now(timezone.utc)
    conn.execute(update(import_jobs).where(import_jobs.c.id == job_id).values(**values))


def recent_import_jobs(conn: Connection, data_source_id: int | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The latest import jobs (newest first), each with its source's name under ``source``."""
    query = (select(import_jobs, data_sources.c.name.label("source"))
             .join(data_sources, data_sources.c.id == import_jobs.c.data_source_id)
             .order_by(import_jobs.c.id.desc()).limit(limit))
    if data_source_id is not None:
        query = query.where(import_jobs.c.data_source_id == data_source_id)
    return [dict(row) for row in conn.execute(query).mappings()]


def running_import_jobs(conn: Connection, data_source_id: int, kind: str) -> list[dict[str, Any]]:
    """The jobs of one source and kind still marked running (their processes may be gone)."""
    return [dict(row) for row in conn.execute(
        select(import_jobs).where(import_jobs.c.data_source_id == data_source_id, import_jobs.c.kind == kind,
                                  import_jobs.c.status == "running").order_by(import_jobs.c.id)
    ).mappings()]


def finish_import_job(conn: Connection, job_id: int, status: str = "done", error: str | None = None) -> None:
    """Mark the job done (or failed, or interrupted, with the one-line reason)."""
    conn.execute(
        update(import_jobs)
        .where(import_jobs.c.id == job_id)
        .values(status=status, error=error, finished_at=datetime.now(timezone.utc))
    )


def add_rejections(conn: Connection, job_id: int, rejections: Sequence[Mapping[str, Any]]) -> None:
    """Store rejected rows: dicts with row, column, value, reason (one executemany)."""
    if not rejections:
        return
    conn.execute(
        import_rejections.insert(),
        [
            {
                "import_job_id": job_id,
                "row_number": int(r["row"]),
                "column": (r.get("column") or None) and str(r["column"])[:255],
                "value": r.get("value"),
                "reason": str(r["reason"]),
            }
            for r in rejections
        ],
    )


def import_job(conn: Connection, job_ref: str | int) -> dict[str, Any] | None:
    """A job by id or uuid as a JSON-ready dict with its rejection count, or None."""
    column = import_jobs.c.uuid if isinstance(job_ref, str) else import_jobs.c.id
    row = conn.execute(select(import_jobs).where(column == job_ref)).mappings().first()
    if row is None:
        return None
    job = dict(row)
    job["rejections_stored"] = conn.execute(
        select(func.count()).select_from(import_rejections).where(import_rejections.c.import_job_id == row["id"])
    ).scalar_one()
    return job


def job_rejections(conn: Connection, job_id: int) -> list[dict[str, Any]]:
    """The rejected rows of a job, by row number."""
    return [
        {"row": r.row_number, "column": r.column or "", "value": r.value, "reason": r.reason}
        for r in conn.execute(
            select(import_rejections)
            .where(import_rejections.c.import_job_id == job_id)
            .order_by(import_rejections.c.row_number, import_rejections.c.id)
        )
    ]


def external_ids_by_email(conn: Connection, data_source_id: int, emails: Iterable[str]) -> dict[str, str]:
    """For normalised emails, the external id of this source's existing source customer with that email.

    A row without an external id is matched to the source's existing record by normalised email; when
    several share it, the oldest (lowest id) wins so the choice is stable across re-imports.
    """
    wanted = list(dict.fromkeys(emails))
    found: dict[str, str] = {}
    sc = source_customers
    for start in range(0, len(wanted), LOOKUP_CHUNK):
        part = wanted[start : start + LOOKUP_CHUNK]
        for email_norm, external_id in conn.execute(
            select(sc.c.email_norm, sc.c.external_id)
            .where(sc.c.data_source_id == data_source_id, sc.c.email_norm.in_(part))
            .order_by(sc.c.id)
        ):
            found.setdefault(email_norm, external_id)
    return found


# ---------------------------------------------------------------- per-row fingerprints (Google Sheets)


def load_row_fingerprints(conn: Connection, data_source_id: int, stream: str) -> dict[str, str]:
    """``{row key: fingerprint}`` of the rows applied by earlier runs of one source and stream."""
    t = import_row_fingerprints
    return {
        key: fp
        for key, fp in conn.execute(
            select(t.c.row_key, t.c.fingerprint).where(t.c.data_source_id == data_source_id, t.c.stream == stream)
        )
    }


def save_row_fingerprints(
    conn: Connection, data_source_id: int, stream: str, fingerprints: Mapping[str, str]
) -> None:
    """Insert or replace fingerprints of applied rows (delete + insert: portable and batched)."""
    if not fingerprints:
        return
    delete_row_fingerprints(conn, data_source_id, stream, list(fingerprints))
    conn.execute(
        import_row_fingerprints.insert(),
        [
            {"data_source_id": data_source_id, "stream": stream, "row_key": key, "fingerprint": fp}
            for key, fp in fingerprints.items()
        ],
    )


def delete_row_fingerprints(conn: Connection, data_source_id: int, stream: str, keys: Sequence[str]) -> None:
    """Forget rows (gone from the sheet, or about to be replaced)."""
    t = import_row_fingerprints
    for start in range(0, len(keys), LOOKUP_CHUNK):
        conn.execute(
            delete(t).where(
                t.c.data_source_id == data_source_id,
                t.c.stream == stream,
                t.c.row_key.in_(list(keys[start : start + LOOKUP_CHUNK])),
            )
        )


# ---------------------------------------------------------------- contacts of existing source customers




def contact_key(contact: ContactRecord) -> str:
    """The identity of a contact within its source customer: external id, email, else the name."""
    if contact.external_id or contact.email:
        return contact.key()
    name = " ".join(p for p in (contact.first_name, contact.last_name) if p).strip().lower()
    return f"name:{name}" if name else contact.key()


@dataclass
class ContactUpsertResult:
    """What one batch of contact rows did; ``missing`` are external ids with no source customer."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    missing: set[str] = field(default_factory=set)


def upsert_source_contacts(
    conn: Connection, data_source_id: int, items: Sequence[tuple[str, ContactRecord]]
) -> ContactUpsertResult:
    """Add or update contacts of existing source customers (structured contacts import), batched.

    A contact is matched by ``contact_key`` within its source customer; contacts not in the batch are
    left alone (a contacts file adds and updates, it does not delete), and so are the fields a contact
    does not report (``ContactRecord.present``: a column the file does not have, an empty cell). One
    lookup per table, one executemany for inserts and one for updates.
    """
    result = ContactUpsertResult()
    if not items:
        return result
    sc = source_customers
    owners: dict[str, tuple[int, int]] = {}
    external_ids = list({external_id for external_id, _ in items})
    for start in range(0, len(external_ids), LOOKUP_CHUNK):
        for external_id, sc_id, customer_id in conn.execute(
            select(sc.c.external_id, sc.c.id, sc.c.customer_id).where(
                sc.c.data_source_id == data_source_id, sc.c.external_id.in_(external_ids[start : start + LOOKUP_CHUNK])
            )
        ):
            owners[external_id] = (sc_id, customer_id)
    sc_ids = [sc_id for sc_id, _ in owners.values()]
    existing: dict[tuple[int, str], Any] = {}
    positions: dict[int, int] = {}
    for start in range(0, len(sc_ids), LOOKUP_CHUNK):
        part = sc_ids[start : start + LOOKUP_CHUNK]
        for row in conn.execute(select(contacts).where(contacts.c.source_customer_id.in_(part))):
            existing[(row.source_customer_id, row.contact_key)] = row
            positions[row.source_customer_id] = max(positions.get(row.source_customer_id, 0), row.position)
    now = datetime.now(timezone.utc)
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for external_id, contact in items:
        owner = owners.get(external_id)
        if owner is None:
            result.missing.add(external_id)
            continue
        sc_id, customer_id = owner
        key = contact_key(contact)
        values = {name: getattr(contact, name) for name in CONTACT_FIELDS}
        found = existing.get((sc_id, key))
        if found is not None and contact.present is not None:
            values = {name: value if name in contact.present else getattr(found, name)
                      for name, value in values.items()}
        if found is None:
            positions[sc_id] = positions.get(sc_id, 0) + 1
            inserts.append({
                "uuid": new_uuid("con"), "customer_id": customer_id, "source_customer_id": sc_id, "contact_key": key,
                "external_id": contact.external_id, "custom": {}, "position": positions[sc_id],
                "created_at": now, "updated_at": now, **values,
            })
            result.created += 1
        elif any(getattr(found, name) != value for name, value in values.items()):
            updates.append({"b_id": found.id, "updated_at": now, **values})
            result.updated += 1
        else:
            result.unchanged += 1
    if inserts:
        conn.execute(contacts.insert(), inserts)
    if updates:
        stmt = (
            update(contacts)
            .where(contacts.c.id == bindparam("b_id"))
            .values({name: bindparam(name) for name in (*CONTACT_FIELDS, "updated_at")})
        )
        conn.execute(stmt, updates)
    return result
