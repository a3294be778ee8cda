"""``/v1/customers/{uuid}/edits``: a customer's manual edits, and reverting one to the sources' value.

    GET    /v1/customers/{uuid}/edits            the overrides, with who set each and when
    DELETE /v1/customers/{uuid}/edits/{field}    drop one (``owner``, ``tag.vip``, ``custom.seats``, …)

A revert goes through the job ``funnelsync customers edit --unset`` uses (``jobs.edits.edit_customer``),
so the sources' value shows again and the change is announced like any other edit.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from api.auth import request_actor, require_api_key
from api.customers import customer_id_or_404, one_customer
from api.errors import Invalid, NotFound, no_nul_in_url
from jobs.edits import EDIT_FIELDS, edit_customer
from storage.edits import manual_edit_rows

router = APIRouter(
    prefix="/v1/customers", tags=["customers"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)]
)


def _editable(field: str) -> bool:
    return field in EDIT_FIELDS or (field.startswith(("custom.", "tag.")) and len(field.split(".", 1)[1]) > 0)


@router.get("/{uuid}/edits")
def list_edits(request: Request, uuid: str) -> dict[str, Any]:
    """The customer's manual edits (each wins over every source until reverted)."""
    with request.app.state.engine.connect() as conn:
        rows = manual_edit_rows(conn, customer_id_or_404(conn, uuid))
    return {"edits": [{**row, "edited_at": row["edited_at"].isoformat()} for row in rows]}


@router.delete("/{uuid}/edits/{field:path}")
def revert_edit(request: Request, uuid: str, field: str) -> dict[str, Any]:
    """Drop the manual edit of ``field``: the sources' value shows again. Answers the customer."""
    if not _editable(field):
        raise Invalid.one("field", f"{field!r} is not an editable field: use {', '.join(EDIT_FIELDS)}, "
                          "tag.<name> or custom.<key>")
    engine = request.app.state.engine
    with engine.connect() as conn:
        customer_id = customer_id_or_404(conn, uuid)
        if field not in {row["field"] for row in manual_edit_rows(conn, customer_id)}:
            raise NotFound(f"customer {uuid!r} has no manual edit of {field!r}")
    edit_customer(engine, customer_id, {}, [field], actor=request_actor(request))
    with engine.connect() as conn:
        return one_customer(conn, customer_id, request)
