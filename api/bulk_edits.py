"""``POST /v1/customers/bulk_edits``: one edit for many customers, as ``funnelsync bulk-edit`` makes it.

The body names the customers (``cus_…`` uuids, ``SOURCE:EXTERNAL_ID`` or emails, as ``bulk-edit --ids``
reads them) and what to set, as text in the CLI's ``--set field=value`` form; the job
(``jobs.edits.apply_bulk_edit``) applies it in batches and skips each customer a rule refuses, with the
reason (a lead status on a subscriber, a lead date after the trial). The answer is the CLI's ``--json``
summary: ``applied``, ``skipped``, ``skips`` (customer and reason), ``dry_run``, ``notes``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from api.auth import request_actor, require_api_key
from api.errors import Invalid, JsonBody, body_example, no_nul_in_url, require_object
from jobs.edits import BULK_FIELDS, EditValueError, account_zone, apply_bulk_edit, parse_assignment, targets_from_refs

router = APIRouter(
    prefix="/v1/customers", tags=["customers"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)]
)

# One request edits at most this many customers; more go through `funnelsync bulk-edit --ids FILE`.
MAX_CUSTOMERS = 1000


@router.post("/bulk_edits", openapi_extra=body_example({
    "customers": ["cus_…", "Website leads:L-17", "ann@example.com"],
    "set": {"lead_status": "Working_Lead", "owner": "rep@example.com", "tags": "webinar,hot", "custom.seats": "12"},
    "dry_run": False,
}))
def bulk_edit(request: Request, body: JsonBody) -> dict[str, Any]:
    """Apply ``set`` to every customer named; the skipped ones are listed with their reasons."""
    data = require_object(body)
    errors: list[dict[str, str]] = []
    for key in data:
        if key not in ("customers", "set", "dry_run"):
            errors.append({"field": key, "reason": "unknown field; accepted: customers, dry_run, set"})
    refs = data.get("customers")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) and r.strip() for r in refs):
        errors.append({"field": "customers", "reason": "expected a non-empty list of customer references "
                       "(cus_… uuid, SOURCE:EXTERNAL_ID or email)"})
    elif len(refs) > MAX_CUSTOMERS:
        errors.append({"field": "customers", "reason": f"at most {MAX_CUSTOMERS} customers a request, got {len(refs)}"})
    dry_run = data.get("dry_run", False)
    if not isinstance(dry_run, bool):
        errors.append({"field": "dry_run", "reason": f"expected true or false, got {dry_run!r}"})
    assignments = data.get("set")
    edits: dict[str, Any] = {}
    if not isinstance(assignments, dict) or not assignments:
        errors.append({"field": "set", "reason": "expected an object of field: value (text), e.g. "
                       '{"owner": "rep@example.com"}; fields: ' + ", ".join(BULK_FIELDS) + ", tags, tag.<name>, "
                       "custom.<key>"})
    else:
        tz = account_zone()
        for name, value in assignments.items():
            if not isinstance(value, str):
                errors.append({"field": f"set.{name}", "reason": f"expected text, got {type(value).__name__}"})
                continue
            try:
                edits.update(parse_assignment(name, value, BULK_FIELDS, tz))
            except EditValueError as exc:
                errors.append({"field": f"set.{name}", "reason": str(exc)})
    if errors or not isinstance(refs, list):
        raise Invalid(errors)
    engine = request.app.state.engine
    summary = apply_bulk_edit(engine, targets_from_refs(engine, refs, edits), actor=request_actor(request),
                              dry_run=dry_run)
    return summary.as_json()
