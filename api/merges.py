"""``POST /v1/customers/merges`` and ``POST /v1/customers/unmerges``, wired to ``storage.merge``.

After a merge the merged-away uuid answers 404 and its external ids resolve to the survivor; an
unmerge brings the merged-away customer back (same uuid) with the source customer named.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, select

from api.auth import request_actor, require_api_key
from api.customers import customer_id_or_404
from api.errors import ApiError, Invalid, JsonBody, NotFound, body_example, no_nul_in_url, require_object
from api.fields import FieldReader
from storage.customer_pages import customer_id_by_external, customer_id_by_uuid
from storage.merge import CustomerNotFound, MergeError, merge_customers
from storage.schema import source_customers
from storage.sources import get_source
from storage.split import CannotSplit, separate

router = APIRouter(
    prefix="/v1/customers", tags=["merges"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)]
)

# The unmerge call may ask to move these to the new customer; funnelsync has none of them, so the
# list is checked and otherwise has no effect.
MOVABLE = ("tasks", "opportunities", "notes")


def _customer_ref(conn: Connection, reader: FieldReader, side: str, ref: Any) -> int | None:
    """The customer named by ``{"customer_uuid"}`` or ``{"data_source_uuid", "external_id"}``."""
    if not isinstance(ref, dict):
        reader.fail(side, 'expected {"customer_uuid": …} or {"data_source_uuid": …, "external_id": …}')
        return None
    if ref.get("customer_uuid"):
        uuid = ref["customer_uuid"]
        found = customer_id_by_uuid(conn, uuid) if isinstance(uuid, str) else None
        if found is None:
            raise NotFound(f"{side}: no customer with uuid {uuid!r} (unknown, deleted or merged away)")
        return found
    ds_uuid, external_id = ref.get("data_source_uuid"), ref.get("external_id")
    if not isinstance(ds_uuid, str) or not isinstance(external_id, (str, int)) or not ds_uuid or external_id == "":
        reader.fail(side, "give customer_uuid, or data_source_uuid with external_id")
        return None
    found = customer_id_by_external(conn, ds_uuid, str(external_id))
    if found is None:
        raise NotFound(f"{side}: no customer with external id {external_id!r} in data source {ds_uuid!r}")
    return found


@router.post("/merges", status_code=204, openapi_extra=body_example(
    {"from": {"customer_uuid": "cus_…"}, "into": {"data_source_uuid": "ds_…", "external_id": "34916129"}}))
def merge(request: Request, body: JsonBody) -> Response:
    """Merge ``from`` into ``into``: ``into`` survives, ``from``'s uuid answers 404 afterwards."""
    data = require_object(body)
    reader = FieldReader(data)
    for side in ("from", "into"):
        if side not in data:
            reader.fail(side, "is required")
    reader.check()
    with request.app.state.engine.begin() as conn:
        from_id = _customer_ref(conn, reader, "from", data["from"])
        into_id = _customer_ref(conn, reader, "into", data["into"])
        reader.check()
        assert from_id is not None and into_id is not None
        if from_id == into_id:
            raise Invalid.one("from", "from and into name the same customer")
        try:
            merge_customers(conn, from_id, into_id, rule="manual", actor=request_actor(request))
        except CustomerNotFound as exc:
            raise NotFound(str(exc)) from None
        except MergeError as exc:
            raise Invalid.one("from", str(exc)) from None
    return Response(status_code=204)


@router.post("/unmerges", status_code=202, openapi_extra=body_example(
    {"customer_uuid": "cus_…", "data_source_uuid": "ds_…", "external_id": "lead-001", "move_to_new_customer": []}))
def unmerge_route(request: Request, body: JsonBody) -> JSONResponse:
    """Separate the source customer (``data_source_uuid``, ``external_id``) from ``customer_uuid``.

    Done at once (the commercial product queues it); answers 202 like it, with the customer restored
    (a merged-away customer comes back with its uuid) or created (a record linked without a merge).
    """
    data = require_object(body)
    reader = FieldReader(data)
    customer_uuid = reader.text("customer_uuid", required=True)
    ds_uuid = reader.text("data_source_uuid", required=True)
    external_id = reader.text("external_id", required=True)
    move = data.get("move_to_new_customer")
    if move is not None and (not isinstance(move, list) or any(m not in MOVABLE for m in move)):
        reader.fail("move_to_new_customer", f"expected a list of {', '.join(MOVABLE)}, got {move!r}")
    reader.check()
    assert customer_uuid is not None and ds_uuid is not None and external_id is not None
    with request.app.state.engine.begin() as conn:
        customer_id = customer_id_or_404(conn, customer_uuid)
        source = get_source(conn, ds_uuid) if ds_uuid.startswith("ds_") else None
        if source is None:
            raise NotFound(f"no data source with uuid {ds_uuid!r}")
        sc_id = conn.execute(
            select(source_customers.c.id).where(
                source_customers.c.data_source_id == source.id, source_customers.c.external_id == external_id
            )
        ).scalar()
        if sc_id is None:
            raise NotFound(f"no record with external id {external_id!r} in data source {ds_uuid!r}")
        # A record no merge brought in is separated into a new customer, as the commercial product's
        # unmerge does; either way the answer names the event logged.
        try:
            event = separate(conn, customer_id, sc_id, actor=request_actor(request))
        except CustomerNotFound as exc:
            raise NotFound(str(exc)) from None
        except CannotSplit as exc:
            raise Invalid.one("external_id", str(exc)) from None
        except MergeError as exc:
            raise ApiError(409, str(exc)) from None
    return JSONResponse(
        {"customer_uuid": customer_uuid, "restored_customer_uuid": event.from_customer_uuid,
         "merge_event": event.uuid},
        status_code=202,
    )
