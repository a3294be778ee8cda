"""``/v1/customers``: create, list (cursor pagination), search by email, retrieve, update, delete.

A customer created here is a source customer of an ``api`` (custom) data source, stored through the
same batched upsert every import uses. Updates are manual edits: the projection lets them win over
every source, so a re-sync never erases them (README, "How customers are stored").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import OperationalError

from api.auth import request_actor, require_api_key
from api.errors import Invalid, JsonBody, NotFound, body_example, no_nul_in_url, require_object
from api.fields import FieldReader, read_custom_attributes
from api.group_commit import GroupCommit
from api.wire import (
    customer_json,
    customers_json,
    decode_cursor,
    json_bytes,
    kinds_of_system,
    page_envelope,
    per_page_value,
    writable_kinds,
)
from funnelsync.edit_rules import lies_in_future, trial_precedes_lead
from funnelsync.records import CUSTOMER_STATUSES, LEAD_STATUSES, SourceCustomerRecord
from storage.contacts import CONTACT_FIELDS, check_contact_fields, create_contact, update_contact
from storage.customer_pages import count_customers, customer_id_by_uuid, find_customer_ids
from storage.customers import linked_views, merged_into
from storage.edits import EditError, set_manual_edits
from storage.key_lookups import rows_by_external_id
from storage.projection import attribute_types, register_attribute_types
from storage.removal import delete_customers
from storage.schema import contacts, customers
from storage.sources import get_source
from storage.upsert import take_write_lock, upsert_records

router = APIRouter(
    prefix="/v1/customers", tags=["customers"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)]
)

TEXT_FIELDS = ("name", "company", "state", "city", "zip", "website_url", "owner")
# Keys of the read shape a client may send back unchanged; they are ignored, not refused.
READ_ONLY = frozenset({
    "id", "uuid", "external_id", "external_ids", "data_source_uuid", "data_source_uuids", "customer-since",
    "mrr", "arr", "billing-system-url", "chartmogul-url", "billing-system-type", "currency", "currency-sign",
    "address", "created_at",
})
UPDATABLE = frozenset({
    *TEXT_FIELDS, "email", "country", "lead_created_at", "free_trial_started_at", "status", "attributes",
    "primary_contact",
})
CREATE_FIELDS = frozenset({*UPDATABLE, "data_source_uuid", "external_id"})


def customer_id_or_404(conn: Connection, uuid: str) -> int:
    """The id of a live customer, else 404 (a merged-away uuid is gone: its survivor holds its ids)."""
    found = customer_id_by_uuid(conn, uuid)
    if found is None:
        survivor = merged_into(conn, uuid)
        if survivor is not None:
            raise NotFound(f"customer {uuid!r} was merged into {survivor}")
        raise NotFound(f"no customer with uuid {uuid!r} (unknown or deleted)")
    return found


def one_customer(conn: Connection, customer_id: int, request: Request) -> dict[str, Any]:
    """The API shape of one customer."""
    return customers_json(conn, [customer_id], str(request.base_url))[0]


def check_dates(
    reader: FieldReader, lead: datetime | None, trial: datetime | None, given: Sequence[str]
) -> None:
    """The edit rules (``funnelsync.edit_rules``): no lead or trial date in the future, no trial before
    the lead date. ``given`` names the date fields the request set."""
    now = datetime.now(UTC)
    for name, value in (("lead_created_at", lead), ("free_trial_started_at", trial)):
        if name in given and value is not None and lies_in_future(value, now):
            reader.fail(name, f"{value.isoformat()} lies in the future")
    reason = trial_precedes_lead(lead, trial)
    if reason is not None:
        reader.fail("free_trial_started_at" if "free_trial_started_at" in given else "lead_created_at", reason)


def _status_alias(data: dict[str, Any]) -> dict[str, Any]:
    """``lead_status`` (our read shape's name) is accepted for ``status`` (the commercial product's).

    Both with different values is refused: a read object sent back with only ``lead_status`` changed
    would otherwise keep its stale ``status`` without a word.
    """
    # (A null lead_status beside a status is the read shape of an untouched lead: not a conflict.)
    if data.get("lead_status") is not None and "status" in data and data["lead_status"] != data["status"]:
        raise Invalid.one(
            "lead_status", f"{data['lead_status']!r} conflicts with status {data['status']!r}: give one of them"
        )
    if "lead_status" in data and "status" not in data:
        data = {**data, "status": data["lead_status"]}
    data.pop("lead_status", None)
    return data


def _unknown_keys(reader: FieldReader, data: dict[str, Any], allowed: frozenset[str]) -> None:
    for key in data:
        if key not in allowed and key not in READ_ONLY:
            reader.fail(key, f"unknown field; accepted: {', '.join(sorted(allowed))}")


_MAX_PAGE = 10**12
_PRIMARY_CONTACT_KEYS = frozenset((*CONTACT_FIELDS, "custom"))


def _contact_fields(reader: FieldReader, value: Any) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Fields and custom fields of a ``primary_contact`` object."""
    if value is None:
        return None
    if not isinstance(value, dict):
        reader.fail("primary_contact", f"expected an object, got {type(value).__name__}")
        return None
    sub = FieldReader(value, prefix="primary_contact.")
    # A typo in a contact key must not be dropped silently, as for the customer's own keys.
    for key in value:
        if key not in _PRIMARY_CONTACT_KEYS:
            sub.fail(key, f"unknown field; accepted: {', '.join(sorted(_PRIMARY_CONTACT_KEYS))}")
    fields = read_contact_fields(sub, value)
    custom = read_contact_custom(sub, value.get("custom"))
    reader.errors.extend(sub.errors)
    return fields, custom


def read_contact_fields(reader: FieldReader, data: dict[str, Any]) -> dict[str, Any]:
    """The contact fields present in ``data``, validated (the rules are storage's, shared with the CLI)."""
    fields, errors = check_contact_fields(data)
    for name, reason in errors:
        reader.fail(name, reason)
    return fields


def read_contact_custom(reader: FieldReader, value: Any) -> dict[str, Any]:
    """Contact custom fields: ``[{"key", "value"}]`` or ``{key: value}``."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    if not isinstance(value, list):
        reader.fail("custom", f"expected a list of {{key, value}} objects, got {type(value).__name__}")
        return {}
    out: dict[str, Any] = {}
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not item["key"].strip():
            reader.fail(f"custom[{i}]", "expected an object with a non-empty 'key' and a 'value'")
            continue
        out[item["key"].strip()] = item.get("value")
    return out


# ------------------------------------------------------------------ create


@dataclass(eq=False)
class _Create:
    """One ``POST /v1/customers``: the body's fields checked so far, then what writing it answered."""

    reader: FieldReader
    data: dict[str, Any]
    ds_uuid: str | None
    external_id: str | None
    values: dict[str, Any]
    status: str | None
    contact: tuple[dict[str, Any], dict[str, Any]] | None
    base_url: str
    checked: int = 0  # how many of the reader's errors the checks without the database found
    customer_id: int = 0
    answer: dict[str, Any] | None = None
    refused: Invalid | None = None


def customer_creates(engine: Engine) -> GroupCommit[_Create]:
    """The app's creates, written in batches (``api.group_commit``): one transaction for those that come
    in while the previous batch is being written."""
    # A database that is locked past its busy timeout, or gone, would fail each create written alone too.
    return GroupCommit(partial(_write_creates, engine),
                       alone_again=lambda error: not isinstance(error, OperationalError))


@router.post("", status_code=201, response_model=dict[str, Any], openapi_extra=body_example({
    "data_source_uuid": "ds_…", "external_id": "lead-001", "name": "Adam Smith", "email": "adam@smith.com",
    "country": "US", "lead_created_at": "2022-10-14 00:00:00", "free_trial_started_at": "2022-10-20 00:00:00",
    "attributes": {"tags": ["webinar"], "custom": [{"type": "String", "key": "channel", "value": "Facebook"}]},
    "primary_contact": {"first_name": "Adam", "email": "adam@smith.com"},
}))
async def create_customer(request: Request, body: JsonBody) -> Response:
    """Create a customer (a lead, usually) in an API data source."""
    return await create_answer(request, body)


async def create_answer(request: Request, body: Any) -> Response:
    """The 201 answering a create with the customer's JSON (the route's, and ``api.hot_paths``'s).

    Raises:
        ApiError: why the create is refused (422).
    """
    create = _read_create(_status_alias(require_object(body)), str(request.base_url))
    await request.app.state.customer_creates.submit(create)
    if create.refused is not None:
        raise create.refused
    assert create.answer is not None
    return Response(json_bytes(create.answer), status_code=201, media_type="application/json")


def _read_create(data: dict[str, Any], base_url: str) -> _Create:
    """The checks of a create that need no database (their errors are reported with the others)."""
    reader = FieldReader(data)
    _unknown_keys(reader, data, CREATE_FIELDS)
    ds_uuid = reader.text("data_source_uuid", required=True)
    external_id = reader.text("external_id", required=True)
    values: dict[str, Any] = {name: reader.text(name) for name in TEXT_FIELDS}
    values["email"] = reader.email("email")
    values["country"] = reader.country("country")
    values["lead_created_at"] = reader.datetime("lead_created_at")
    values["free_trial_started_at"] = reader.datetime("free_trial_started_at")
    check_dates(reader, values["lead_created_at"], values["free_trial_started_at"],
                ("lead_created_at", "free_trial_started_at"))
    status = reader.text("status")
    if status is not None and status not in LEAD_STATUSES:
        reader.fail("status", f"a new customer takes a lead status: one of {', '.join(LEAD_STATUSES)}; got {status!r}")
    contact = _contact_fields(reader, data.get("primary_contact"))
    return _Create(reader, data, ds_uuid, external_id, values, status, contact, base_url, len(reader.errors))


def _write_creates(engine: Engine, creates: Sequence[_Create]) -> None:
    for create in creates:  # a batch that failed is written again item by item: start afresh
        del create.reader.errors[create.checked:]
        create.customer_id, create.answer, create.refused = 0, None, None
    with engine.begin() as conn:
        _create_in(conn, creates)


def _create_in(conn: Connection, creates: Sequence[_Create]) -> None:
    """Write a batch of creates in the caller's transaction; each gets its answer, or why it is refused."""
    take_write_lock(conn)  # SQLite: what the checks read stays true until the batch commits
    accepted = _checked(conn, creates)
    for source_id in dict.fromkeys(source.id for _, source, _ in accepted):
        group = [(create, record) for create, source, record in accepted if source.id == source_id]
        result = upsert_records(conn, source_id, [record for _, record in group])
        linked = dict(rows_by_external_id(conn, source_id, [record.external_id for _, record in group],
                                          ("customer_id",)))
        made = set(result.created_customer_ids)
        for create, record in group:
            if linked.get(record.external_id) not in made:
                # Another process created the same external id between our check and our write (PostgreSQL):
                # refuse (the transaction rolls back) rather than leave a customer with no source record.
                raise Invalid.one("external_id", f"a customer with external id {record.external_id!r} exists "
                                  "already in this data source")
            create.customer_id = linked[record.external_id]
    for create, _source, _record in accepted:
        if create.contact is not None:
            fields, contact_custom = create.contact
            create_contact(conn, create.customer_id, {**fields, "position": fields.get("position") or 1},
                           custom=contact_custom)
    ids = [create.customer_id for create, _, _ in accepted]
    views = {view["id"]: (view, links) for view, links in linked_views(conn, ids)}
    for create, _source, _record in accepted:
        create.answer = customer_json(*views[create.customer_id], create.base_url)


def _checked(conn: Connection, creates: Sequence[_Create]) -> list[tuple[_Create, Any, SourceCustomerRecord]]:
    """The creates that may be written, with their data source and record; the others get why they are refused.

    Each is checked as if the ones before it in the batch were stored already: an external id or a new
    custom attribute key taken by an earlier one is refused as it would be a moment later.
    """
    sources = {uuid: get_source(conn, uuid) for uuid in {c.ds_uuid for c in creates}
               if uuid and uuid.startswith("ds_")}
    registered = attribute_types(conn, sorted({key for c in creates for key in _custom_keys(_custom_of(c.data))}))
    types = dict(registered)
    taken: set[tuple[int, str]] = set()
    for known in {s.id: s for s in sources.values() if s is not None}.values():
        wanted = [c.external_id for c in creates if c.external_id and sources.get(c.ds_uuid or "") is known]
        taken.update((known.id, ext) for ext, _ in rows_by_external_id(conn, known.id, wanted, ("id",)))
    accepted: list[tuple[_Create, Any, SourceCustomerRecord]] = []
    for create in creates:
        reader, ext = create.reader, create.external_id
        tags, custom = _typed_attributes(reader, create.data.get("attributes"), types)
        source = sources.get(create.ds_uuid) if create.ds_uuid else None
        if create.ds_uuid and source is None:
            reader.fail("data_source_uuid", f"no data source with uuid {create.ds_uuid!r}")
        elif source is not None and source.kind not in writable_kinds():
            reader.fail("data_source_uuid", f"data source {source.name!r} is a {source.kind} integration; "
                        "customers are created only in API or custom data sources (POST /v1/data_sources)")
        if source is not None and ext and (source.id, ext) in taken:
            reader.fail("external_id", f"a customer with external id {ext!r} exists already in this data source")
        try:
            reader.check()
        except Invalid as refused:
            create.refused = refused
            continue
        assert source is not None and ext is not None
        taken.add((source.id, ext))
        types.update({key: kind for key, (kind, _) in custom.items()})
        accepted.append((create, source, SourceCustomerRecord(
            external_id=ext, lead_status=create.status, tags=tags,
            custom={key: value for key, (_, value) in custom.items()}, raw=create.data, **create.values,
        )))
    # PostgreSQL: another process may have registered one of the new keys with another type meanwhile.
    unregistered = {key: kind for key, kind in types.items() if key not in registered}
    conflicts = register_attribute_types(conn, unregistered) if unregistered else {}
    for create, _source, record in accepted:
        clash = next((key for key in record.custom if key in conflicts), None)
        if clash is not None:
            taken_as, asked = conflicts[clash], unregistered[clash]
            create.refused = Invalid.one("attributes.custom",
                                         f"custom attribute {clash!r} is of type {taken_as}, not {asked}")
    return [entry for entry in accepted if entry[0].refused is None]


def _refuse_type_conflicts(conflicts: dict[str, str], types: dict[str, str]) -> None:
    """422 when another request registered one of our new custom attribute keys with another type first."""
    for key, registered in conflicts.items():
        raise Invalid.one("attributes.custom", f"custom attribute {key!r} is of type {registered}, not {types[key]}")


def _read_attributes(
    reader: FieldReader, conn: Connection, value: Any
) -> tuple[list[str], dict[str, tuple[str, Any]]]:
    """Tags and typed custom attributes of an ``attributes`` object."""
    keys = _custom_keys(value.get("custom")) if isinstance(value, dict) else []
    return _typed_attributes(reader, value, attribute_types(conn, keys) if keys else {})


def _typed_attributes(
    reader: FieldReader, value: Any, known_types: dict[str, str]
) -> tuple[list[str], dict[str, tuple[str, Any]]]:
    """Tags and typed custom attributes of an ``attributes`` object, custom keys already typed as given."""
    if value is None:
        return [], {}
    if not isinstance(value, dict):
        reader.fail("attributes", f"expected an object with tags and custom, got {type(value).__name__}")
        return [], {}
    for key in value:
        if key not in ("tags", "custom"):
            reader.fail(f"attributes.{key}", "unknown attribute group; accepted: tags, custom")
    tags = reader.tags("attributes.tags", value["tags"]) if value.get("tags") is not None else []
    custom: dict[str, tuple[str, Any]] = {}
    if value.get("custom") is not None:
        custom = read_custom_attributes(reader, "attributes.custom", value["custom"], known_types)
    return tags, custom


def _custom_of(data: dict[str, Any]) -> Any:
    attributes = data.get("attributes")
    return attributes.get("custom") if isinstance(attributes, dict) else None


def _custom_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [k for k in value if isinstance(k, str)]
    if isinstance(value, list):
        return [i["key"] for i in value if isinstance(i, dict) and isinstance(i.get("key"), str)]
    return []


# ------------------------------------------------------------------ list, search, retrieve


def _list(request: Request, *, email: str | None = None, **filters: Any) -> dict[str, Any]:
    query = request.query_params
    per_page = per_page_value(query.get("per_page"))
    page_raw = query.get("page")
    with request.app.state.engine.connect() as conn:
        if page_raw is not None and not query.get("cursor"):
            # Legacy page-number paging (older clients and the Airbyte source still use it).
            # ASCII digits only ("²".isdigit() is true but int() refuses it), and an offset that fits the
            # database's 64-bit integers: either was a 500.
            if not (page_raw.isascii() and page_raw.isdigit()) or not 1 <= int(page_raw) <= _MAX_PAGE:
                raise Invalid.one("page", f"expected a page number from 1 to {_MAX_PAGE}, got {page_raw!r}")
            page = int(page_raw)
            ids = find_customer_ids(conn, limit=per_page + 1, offset=(page - 1) * per_page, email=email, **filters)
            total = count_customers(conn, email=email, **filters)
            out = page_envelope(customers_json(conn, ids[:per_page], str(request.base_url)), ids, per_page)
            out.update(page=page, current_page=page, total_pages=max(1, -(-total // per_page)))
            return out
        after = decode_cursor(query.get("cursor"))
        ids = find_customer_ids(conn, after_id=after, limit=per_page + 1, email=email, **filters)
        return page_envelope(customers_json(conn, ids[:per_page], str(request.base_url)), ids, per_page)


@router.get("")
def list_customers(
    request: Request, data_source_uuid: str | None = None, external_id: str | None = None,
    status: str | None = None, system: str | None = None, email: str | None = None, q: str | None = None,
) -> dict[str, Any]:
    """Customers in id order, ``per_page`` (≤ 200) at a time; follow ``cursor`` while ``has_more``.

    ``q`` (funnelsync's own) finds customers whose name, email or company contains the text.
    """
    if status is not None and status not in CUSTOMER_STATUSES:
        raise Invalid.one("status", f"expected one of {', '.join(CUSTOMER_STATUSES)}, got {status!r}")
    kinds = None
    if system is not None:
        kinds = kinds_of_system(system)
        if not kinds:
            raise Invalid.one("system", f"unknown billing system {system!r}")
    return _list(request, data_source_uuid=data_source_uuid, external_id=external_id, status=status,
                 kinds=kinds, email=email, text=q or None)


@router.get("/search")
def search_customers(request: Request, email: str | None = None) -> dict[str, Any]:
    """Customers whose (normalised) email is ``email``, in the list envelope."""
    if not email or not email.strip():
        raise Invalid.one("email", "is required: GET /v1/customers/search?email=someone@example.com")
    return _list(request, email=email.strip())


@router.get("/{uuid}")
def retrieve_customer(request: Request, uuid: str) -> dict[str, Any]:
    """One customer; 404 for an unknown, deleted or merged-away uuid."""
    with request.app.state.engine.connect() as conn:
        return one_customer(conn, customer_id_or_404(conn, uuid), request)


# ------------------------------------------------------------------ update, delete


def customer_edits(
    reader: FieldReader, conn: Connection, customer_id: int, data: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Manual edits (field → value) and new custom attribute types from an update payload."""
    edits: dict[str, Any] = {}
    for name in TEXT_FIELDS:
        if reader.has(name):
            edits[name] = reader.text(name, max_len=2048 if name == "website_url" else 255)
    if reader.has("email"):
        edits["email"] = reader.email("email")
    if reader.has("country"):
        edits["country"] = reader.country("country")
    given = [name for name in ("lead_created_at", "free_trial_started_at") if reader.has(name)]
    for name in given:
        edits[name] = reader.datetime(name)
    if given:
        stored = conn.execute(
            select(customers.c.lead_created_at, customers.c.free_trial_started_at).where(customers.c.id == customer_id)
        ).one()
        check_dates(reader, edits.get("lead_created_at", stored.lead_created_at),
                    edits.get("free_trial_started_at", stored.free_trial_started_at), given)
    if reader.has("status"):
        status = reader.text("status")
        if status is None or status not in LEAD_STATUSES:
            reader.fail("status", f"only a lead status can be set ({', '.join(LEAD_STATUSES)}); "
                        f"Active, Past_Due and Cancelled follow from subscriptions; got {status!r}")
        else:
            current_status = conn.execute(select(customers.c.status).where(customers.c.id == customer_id)).scalar()
            if current_status not in LEAD_STATUSES:
                reader.fail("status", f"a lead status cannot be set on a subscriber (status {current_status})")
            else:
                edits["lead_status"] = status
    tags, custom = _read_attributes(reader, conn, data.get("attributes"))
    attributes = data.get("attributes")
    if isinstance(attributes, dict) and attributes.get("tags") is not None:
        # The tags given become the customer's tags: the others are removed by hand.
        current_tags = conn.execute(select(customers.c.tags).where(customers.c.id == customer_id)).scalar() or []
        edits.update({f"tag.{t}": True for t in tags})
        edits.update({f"tag.{t}": False for t in current_tags if t not in tags})
    edits.update({f"custom.{key}": value for key, (_, value) in custom.items()})
    return edits, {key: kind for key, (kind, _) in custom.items()}


def apply_edits(
    conn: Connection, customer_id: int, edits: dict[str, Any], types: dict[str, str], actor: str
) -> None:
    """Store manual edits; an edit the storage refuses answers 422."""
    _refuse_type_conflicts(register_attribute_types(conn, types), types)
    try:
        set_manual_edits(conn, customer_id, edits, actor=actor)
    except EditError as exc:
        raise Invalid.one("body", str(exc)) from None


_UPDATE_DOC = body_example({"status": "Working_Lead", "free_trial_started_at": "2022-10-21", "owner": "rep@example.com",
                            "attributes": {"tags": ["hot"], "custom": {"seats": 12}}})


@router.patch("/{uuid}", openapi_extra=_UPDATE_DOC)
@router.put("/{uuid}", openapi_extra=_UPDATE_DOC)
def update_customer(request: Request, uuid: str, body: JsonBody) -> dict[str, Any]:
    """Update a customer: every field given becomes a manual edit that no re-sync erases."""
    data = _status_alias(require_object(body))
    reader = FieldReader(data)
    _unknown_keys(reader, data, UPDATABLE)
    contact = _contact_fields(reader, data.get("primary_contact"))
    with request.app.state.engine.begin() as conn:
        customer_id = customer_id_or_404(conn, uuid)
        edits, types = customer_edits(reader, conn, customer_id, data)
        reader.check()
        apply_edits(conn, customer_id, edits, types, request_actor(request))
        if contact is not None:
            fields, contact_custom = contact
            first = conn.execute(
                select(contacts.c.id).where(contacts.c.customer_id == customer_id)
                .order_by(contacts.c.position, contacts.c.id).limit(1)
            ).scalar()
            if first is None:
                create_contact(
                    conn, customer_id, {**fields, "position": fields.get("position") or 1}, custom=contact_custom
                )
            else:
                update_contact(conn, first, fields, custom=contact_custom)
        return one_customer(conn, customer_id, request)


@router.delete("/{uuid}", status_code=204)
def destroy_customer(request: Request, uuid: str) -> Response:
    """Delete a customer with its source customers, contacts and edits."""
    with request.app.state.engine.begin() as conn:
        delete_customers(conn, [customer_id_or_404(conn, uuid)])
    return Response(status_code=204)
