"""Contacts: ``/v1/contacts`` and ``/v1/customers/{uuid}/contacts``.

Contacts created here are hand-made (``source_customer_id`` NULL): no re-sync removes them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Connection, select

from api.auth import require_api_key
from api.customers import customer_id_or_404, read_contact_custom
from api.errors import Invalid, JsonBody, NotFound, body_example, no_nul_in_url, require_object
from api.fields import FieldReader
from api.wire import contacts_json, decode_cursor, page_envelope, per_page_value
from storage.contacts import (
    ContactNotFound,
    check_contact_fields,
    contact_id,
    create_contact,
    delete_contact,
    list_contact_ids,
    merge_contacts,
    update_contact,
)
from storage.customer_pages import customer_id_by_uuid
from storage.schema import data_sources, source_customers

router = APIRouter(tags=["contacts"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)])

CONTACT_KEYS = frozenset({
    "customer_uuid", "data_source_uuid", "external_id", "first_name", "last_name", "position", "title", "email",
    "phone", "linked_in", "twitter", "notes", "custom",
})
DEFAULT_PER_PAGE = 200


def _contact_or_404(conn: Connection, uuid: str) -> int:
    try:
        return contact_id(conn, uuid)
    except ContactNotFound:
        raise NotFound(f"no contact with uuid {uuid!r}") from None


def _one(conn: Connection, contact_pk: int) -> dict[str, Any]:
    return contacts_json(conn, [contact_pk])[0]


def _read(data: dict[str, Any], *, creating: bool) -> tuple[FieldReader, dict[str, Any], dict[str, Any]]:
    reader = FieldReader(data)
    for key in data:
        if key not in CONTACT_KEYS and key not in ("uuid", "customer_external_id", "created_at", "updated_at"):
            reader.fail(key, f"unknown field; accepted: {', '.join(sorted(CONTACT_KEYS))}")
    fields, errors = check_contact_fields(data, creating=creating)
    for name, reason in errors:
        reader.fail(name, reason)
    custom = read_contact_custom(reader, data.get("custom"))
    return reader, fields, custom


def _create(request: Request, data: dict[str, Any], customer_uuid: str | None) -> dict[str, Any]:
    reader, fields, custom = _read(data, creating=True)
    customer_uuid = customer_uuid or reader.text("customer_uuid", required=True)
    ds_uuid = reader.text("data_source_uuid", required=True)
    external_id = reader.text("external_id")
    with request.app.state.engine.begin() as conn:
        customer_pk = None
        if customer_uuid:
            customer_pk = customer_id_by_uuid(conn, customer_uuid)
            if customer_pk is None:
                reader.fail("customer_uuid", f"no customer with uuid {customer_uuid!r}")
        if ds_uuid and customer_pk is not None:
            linked = conn.execute(
                select(data_sources.c.id)
                .join(source_customers, source_customers.c.data_source_id == data_sources.c.id)
                .where(data_sources.c.uuid == ds_uuid, source_customers.c.customer_id == customer_pk)
            ).first()
            if linked is None:
                reader.fail("data_source_uuid", f"customer {customer_uuid} has no record in data source {ds_uuid!r}")
        reader.check()
        assert customer_pk is not None
        pk = create_contact(conn, customer_pk, fields, custom=custom, external_id=external_id)
        return _one(conn, pk)


@router.post("/v1/contacts", status_code=201, openapi_extra=body_example({
    "customer_uuid": "cus_…", "data_source_uuid": "ds_…", "first_name": "Adam", "last_name": "Smith",
    "email": "adam@smith.com", "title": "CEO", "custom": [{"key": "Nickname", "value": "Ad"}]}))
def create_contact_route(request: Request, body: JsonBody) -> dict[str, Any]:
    """Add a contact to a customer (``customer_uuid`` and ``data_source_uuid`` required)."""
    return _create(request, require_object(body), None)


@router.post("/v1/customers/{uuid}/contacts", status_code=201)
def create_customer_contact(request: Request, uuid: str, body: JsonBody) -> dict[str, Any]:
    """Add a contact to the customer ``uuid``."""
    with request.app.state.engine.connect() as conn:
        customer_id_or_404(conn, uuid)
    return _create(request, require_object(body), uuid)


def _page(request: Request, **filters: Any) -> dict[str, Any]:
    per_page = per_page_value(request.query_params.get("per_page"), DEFAULT_PER_PAGE)
    after = decode_cursor(request.query_params.get("cursor"))
    with request.app.state.engine.connect() as conn:
        ids = list_contact_ids(conn, after_id=after, limit=per_page + 1, **filters)
        return page_envelope(contacts_json(conn, ids[:per_page]), ids, per_page)


@router.get("/v1/contacts")
def list_contacts(
    request: Request, email: str | None = None, customer_external_id: str | None = None
) -> dict[str, Any]:
    """Contacts in id order with cursor pagination; filters ``email``, ``customer_external_id``."""
    return _page(request, email=email, customer_external_id=customer_external_id)


@router.get("/v1/customers/{uuid}/contacts")
def list_customer_contacts(request: Request, uuid: str, email: str | None = None) -> dict[str, Any]:
    """The contacts of one customer, with cursor pagination."""
    with request.app.state.engine.connect() as conn:
        customer_pk = customer_id_or_404(conn, uuid)
    return _page(request, customer_id=customer_pk, email=email)


@router.get("/v1/contacts/{uuid}")
def retrieve_contact(request: Request, uuid: str) -> dict[str, Any]:
    """One contact."""
    with request.app.state.engine.connect() as conn:
        return _one(conn, _contact_or_404(conn, uuid))


@router.patch("/v1/contacts/{uuid}")
@router.put("/v1/contacts/{uuid}")
def update_contact_route(request: Request, uuid: str, body: JsonBody) -> dict[str, Any]:
    """Change fields of a contact; ``custom`` keys are merged into its custom fields."""
    data = require_object(body)
    reader, fields, custom = _read(data, creating=False)
    for frozen in ("customer_uuid", "data_source_uuid"):
        if frozen in data:
            reader.fail(frozen, "cannot be changed; merge the customers or create a new contact instead")
    reader.check()
    with request.app.state.engine.begin() as conn:
        pk = _contact_or_404(conn, uuid)
        update_contact(conn, pk, fields, custom=custom)
        return _one(conn, pk)


@router.delete("/v1/contacts/{uuid}", status_code=204)
def delete_contact_route(request: Request, uuid: str) -> Response:
    """Delete a contact."""
    with request.app.state.engine.begin() as conn:
        delete_contact(conn, _contact_or_404(conn, uuid))
    return Response(status_code=204)


@router.post("/v1/contacts/{into_uuid}/merge/{from_uuid}")
def merge_contacts_route(request: Request, into_uuid: str, from_uuid: str) -> dict[str, Any]:
    """Merge contact ``from_uuid`` into ``into_uuid``; answers the merged contact."""
    with request.app.state.engine.begin() as conn:
        into_pk = _contact_or_404(conn, into_uuid)
        from_pk = _contact_or_404(conn, from_uuid)
        if into_pk == from_pk:
            raise Invalid.one("from_uuid", "a contact cannot be merged into itself")
        merge_contacts(conn, into_pk, from_pk)
        return _one(conn, into_pk)
