"""``/v1/data_sources``: create (an ``api`` custom source), list, retrieve, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from api.auth import require_api_key
from api.errors import Invalid, JsonBody, NotFound, body_example, no_nul_in_url, require_object
from api.wire import data_source_json, kinds_of_system
from storage.removal import delete_data_source
from storage.sources import SourceExists, create_source, get_source, list_sources

router = APIRouter(
    prefix="/v1/data_sources", tags=["data sources"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)]
)


def source_by_uuid(conn: Any, uuid: str) -> Any:
    """The data source row of a ``ds_…`` uuid, else 404."""
    row = get_source(conn, uuid) if uuid.startswith("ds_") else None
    if row is None:
        raise NotFound(f"no data source with uuid {uuid!r}")
    return row


@router.post("", status_code=201, openapi_extra=body_example({"name": "In-house CRM"}))
def create_data_source(request: Request, body: JsonBody) -> dict[str, Any]:
    """Create a data source fed through the API (kind ``api``)."""
    data = require_object(body)
    # As for customers, a misspelt key answers 422 rather than being dropped (and "kind"/"system" here
    # would otherwise silently give an Import API source, not the one asked for).
    for key in data:
        if key != "name":
            raise Invalid.one(key, "unknown field; accepted: name")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise Invalid.one("name", "is required (a non-empty string)")
    with request.app.state.engine.begin() as conn:
        try:
            row = create_source(conn, name, "api")
        except SourceExists as exc:
            raise Invalid.one("name", str(exc)) from None
        except ValueError as exc:
            raise Invalid.one("name", str(exc)) from None
        return data_source_json(row)


@router.get("")
def list_data_sources(request: Request, name: str | None = None, system: str | None = None) -> dict[str, Any]:
    """Every data source, optionally only the one named ``name`` or those of a ``system``."""
    with request.app.state.engine.connect() as conn:
        rows = list_sources(conn)
    if name is not None:
        rows = [r for r in rows if r.name == name]
    if system is not None:
        kinds = set(kinds_of_system(system))
        rows = [r for r in rows if r.kind in kinds]
    # Only this key: the client's DataSources namedtuple has no other field.
    return {"data_sources": [data_source_json(r) for r in rows]}


@router.get("/{uuid}")
def retrieve_data_source(request: Request, uuid: str) -> dict[str, Any]:
    """One data source."""
    with request.app.state.engine.connect() as conn:
        return data_source_json(source_by_uuid(conn, uuid))


@router.delete("/{uuid}", status_code=204)
def destroy_data_source(request: Request, uuid: str) -> Response:
    """Delete a data source with what it reported; customers left with no source go too."""
    with request.app.state.engine.begin() as conn:
        row = source_by_uuid(conn, uuid)
        delete_data_source(conn, row.id)
    return Response(status_code=204)
