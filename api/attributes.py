"""Customer attributes: tags and typed custom attributes, by customer uuid or by email.

Every change is a manual edit (``tag.<name>`` true/false, ``custom.<key>``), so it survives re-syncs
of every source and travels with the customer through merges.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from sqlalchemy import Connection, select

from api.auth import request_actor, require_api_key
from api.customers import apply_edits, customer_id_or_404
from api.errors import Invalid, JsonBody, body_example, no_nul_in_url, require_object
from api.fields import FieldReader, attribute_key, read_custom_attributes
from api.wire import customers_json
from storage.customer_pages import find_customer_ids
from storage.projection import attribute_types
from storage.schema import customers

router = APIRouter(
    prefix="/v1/customers", tags=["attributes"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)]
)

def _attributes(conn: Connection, customer_id: int) -> dict[str, Any]:
    row = conn.execute(select(customers.c.tags, customers.c.custom).where(customers.c.id == customer_id)).one()
    return {"tags": list(row.tags or []), "custom": dict(row.custom or {})}


def _tags_from(body: Any) -> list[str]:
    data = require_object(body)
    reader = FieldReader(data)
    if "tags" not in data:
        reader.fail("tags", "is required: a list of tag names")
        reader.check()
    tags = reader.tags("tags", data["tags"])
    if not tags and not reader.errors:
        reader.fail("tags", "give at least one tag")
    reader.check()
    return tags


def _custom_from(conn: Connection, body: Any) -> tuple[dict[str, Any], dict[str, str]]:
    data = require_object(body)
    reader = FieldReader(data)
    value = data.get("custom")
    if value is None:
        reader.fail("custom", "is required: [{\"type\": \"String\", \"key\": \"channel\", \"value\": \"Facebook\"}]")
        reader.check()
    keys = [k for k in value] if isinstance(value, dict) else [
        i["key"] for i in value if isinstance(i, dict) and isinstance(i.get("key"), str)
    ] if isinstance(value, list) else []
    parsed = read_custom_attributes(reader, "custom", value, attribute_types(conn, keys))
    reader.check()
    return {f"custom.{k}": v for k, (_, v) in parsed.items()}, {k: t for k, (t, _) in parsed.items()}


@router.get("/{uuid}/attributes")
def retrieve_attributes(request: Request, uuid: str) -> dict[str, Any]:
    """A customer's tags and custom attributes."""
    with request.app.state.engine.connect() as conn:
        attrs = _attributes(conn, customer_id_or_404(conn, uuid))
    return {"tags": attrs["tags"], "stripe": {}, "clearbit": {}, "custom": attrs["custom"]}


@router.post("/{uuid}/attributes/tags", openapi_extra=body_example({"tags": ["vip", "b2b"]}))
def add_tags(request: Request, uuid: str, body: JsonBody) -> dict[str, Any]:
    """Add tags; answers every tag the customer now has."""
    tags = _tags_from(body)
    with request.app.state.engine.begin() as conn:
        customer_id = customer_id_or_404(conn, uuid)
        apply_edits(conn, customer_id, {f"tag.{t}": True for t in tags}, {}, request_actor(request))
        return {"tags": _attributes(conn, customer_id)["tags"]}


@router.delete("/{uuid}/attributes/tags", openapi_extra=body_example({"tags": ["vip"]}))
def remove_tags(request: Request, uuid: str, body: JsonBody) -> dict[str, Any]:
    """Remove tags (also ones a source reports: the removal is remembered); answers the tags left."""
    tags = _tags_from(body)
    with request.app.state.engine.begin() as conn:
        customer_id = customer_id_or_404(conn, uuid)
        apply_edits(conn, customer_id, {f"tag.{t}": False for t in tags}, {}, request_actor(request))
        return {"tags": _attributes(conn, customer_id)["tags"]}


def _by_email(data: dict[str, Any]) -> str:
    email = data.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise Invalid.one("email", f"is required: the email address of the customers to change, got {email!r}")
    return email.strip()


@router.post("/attributes/tags", openapi_extra=body_example({"email": "adam@smith.com", "tags": ["vip"]}))
def add_tags_by_email(request: Request, body: JsonBody) -> dict[str, Any]:
    """Add tags to every customer with that email; answers those customers."""
    data = require_object(body)
    email = _by_email(data)
    tags = _tags_from({"tags": data.get("tags")} if "tags" in data else {})
    with request.app.state.engine.begin() as conn:
        ids = find_customer_ids(conn, email=email)
        for customer_id in ids:
            apply_edits(conn, customer_id, {f"tag.{t}": True for t in tags}, {}, request_actor(request))
        return {"entries": customers_json(conn, ids, str(request.base_url))}


@router.post("/attributes/custom")
def add_custom_by_email(request: Request, body: JsonBody) -> dict[str, Any]:
    """Add custom attributes to every customer with that email; answers those customers."""
    data = require_object(body)
    email = _by_email(data)
    with request.app.state.engine.begin() as conn:
        edits, types = _custom_from(conn, {"custom": data.get("custom")})
        ids = find_customer_ids(conn, email=email)
        for customer_id in ids:
            apply_edits(conn, customer_id, edits, types, request_actor(request))
        return {"entries": customers_json(conn, ids, str(request.base_url))}


@router.post("/{uuid}/attributes/custom", openapi_extra=body_example(
    {"custom": [{"type": "Integer", "key": "seats", "value": 12}]}))
@router.put("/{uuid}/attributes/custom", openapi_extra=body_example({"custom": {"seats": 20}}))
@router.patch("/{uuid}/attributes/custom")
def set_custom(request: Request, uuid: str, body: JsonBody) -> dict[str, Any]:
    """Add (POST, ``[{type, key, value}]``) or update (PUT/PATCH, ``{key: value}``) custom attributes."""
    with request.app.state.engine.begin() as conn:
        customer_id = customer_id_or_404(conn, uuid)
        edits, types = _custom_from(conn, body)
        apply_edits(conn, customer_id, edits, types, request_actor(request))
        return {"custom": _attributes(conn, customer_id)["custom"]}


@router.delete("/{uuid}/attributes/custom", openapi_extra=body_example({"custom": ["seats"]}))
def remove_custom(request: Request, uuid: str, body: JsonBody) -> dict[str, Any]:
    """Remove custom attributes (``{"custom": ["key", …]}``); answers the ones left."""
    data = require_object(body)
    reader = FieldReader(data)
    value = data.get("custom")
    if not isinstance(value, list) or not value:
        reader.fail("custom", "is required: a list of custom attribute keys to remove")
    keys = (
        [k for i, k in enumerate(value or []) if attribute_key(reader, f"custom[{i}]", k)]
        if isinstance(value, list) else []
    )
    reader.check()
    with request.app.state.engine.begin() as conn:
        customer_id = customer_id_or_404(conn, uuid)
        # A null edit hides the key whichever source reports it.
        apply_edits(conn, customer_id, {f"custom.{k}": None for k in keys}, {}, request_actor(request))
        return {"custom": _attributes(conn, customer_id)["custom"]}
