"""The JSON shapes of the commercial product's REST API, built from our storage views.

The official Python client parses responses with marshmallow schemas that refuse ``null`` for some
string fields (``name``, ``email``, ``company``, ``external_id``, ``status``, ``chartmogul-url``,
``billing-system-type``), so those are always strings here, empty when unknown. List envelopes carry
only ``entries``, ``has_more``, ``cursor`` (+ ``per_page``): the client copies any of ``has_more``,
``summary``, ``customer_uuid``, ``data_source_uuid``, ``cursor`` it finds into a fixed namedtuple, so an
extra one of those would break it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import Connection

from api.errors import Invalid
from connectors.base import Feed
from connectors.registry import SOURCE_KINDS, kinds_fed, source_class
from storage.contacts import contact_view
from storage.customers import TEXT_NEVER_NULL, SourceLink, linked_views

DEFAULT_PER_PAGE = 200
MAX_PER_PAGE = 200
# FastAPI's serializer for a route answering ``dict[str, Any]``: routes that build their Response themselves
# (the hot reads, the batched create) send the same bytes through it.
_JSON = TypeAdapter(dict[str, Any])


def json_bytes(payload: dict[str, Any]) -> bytes:
    """``payload`` as the JSON body a route returning it would send."""
    return _JSON.dump_json(payload)


@cache
def writable_kinds() -> tuple[str, ...]:
    """Source kinds the API may write customers into: integrations own theirs (a re-sync would fight)."""
    return tuple(kinds_fed(Feed.API))


def system_name(kind: str) -> str:
    """How the commercial product names the billing system of a source kind ("system" filter and
    "billing-system-type"); hand-made sources are "Custom" there."""
    if kind not in SOURCE_KINDS:
        return kind
    declared = source_class(kind)
    return declared.system_name or declared.title


def kinds_of_system(system: str) -> list[str]:
    """The source kinds a ``system`` filter value names (by display name or kind, any case)."""
    wanted = system.strip().lower()
    if wanted == "import api":  # how a data source of kind api shows its system
        return ["api"]
    return [kind for kind in SOURCE_KINDS if system_name(kind).lower() == wanted or kind == wanted]


def iso(value: Any) -> str | None:
    """ISO 8601 in UTC for a datetime or an ISO string; None passes through."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return str(value)


def data_source_json(row: Any) -> dict[str, Any]:
    """A data source as the API shows it."""
    return {
        "uuid": row.uuid,
        "name": row.name,
        "created_at": iso(row.created_at),
        "status": "idle" if row.enabled else "disabled",
        "system": "Import API" if row.kind == "api" else system_name(row.kind),
        "kind": row.kind,
    }


def customers_json(conn: Connection, customer_ids: Sequence[int], base_url: str) -> list[dict[str, Any]]:
    """Customers in the commercial product's shape, in the order of ``customer_ids``."""
    return [customer_json(view, links, base_url) for view, links in linked_views(conn, customer_ids)]


def customer_json(view: dict[str, Any], links: Sequence[SourceLink], base_url: str) -> dict[str, Any]:
    """One customer in the commercial product's shape, from its ``storage.customers.linked_views`` entry."""
    first_external, first_ds, first_kind = (
        (links[0].external_id, links[0].data_source_uuid, links[0].kind) if links else ("", "", "api")
    )
    data_source_uuids = list(dict.fromkeys(link.data_source_uuid for link in links))
    return {
        "id": view["id"],
        "uuid": view["uuid"],
        "external_id": first_external,
        "external_ids": [link.external_id for link in links],
        "data_source_uuid": first_ds,
        "data_source_uuids": data_source_uuids,
        **{name: view[name] or "" for name in TEXT_NEVER_NULL},
        "status": view["status"],
        "lead_status": view["lead_status"],
        "customer-since": view["subscriber_since"],
        "lead_created_at": view["lead_created_at"],
        "free_trial_started_at": view["free_trial_started_at"],
        "city": view["city"],
        "state": view["state"],
        "country": view["country"],
        "zip": view["zip"],
        "address": {
            "address_zip": view["zip"], "city": view["city"], "state": view["state"], "country": view["country"],
        },
        "attributes": {"tags": view["tags"], "stripe": {}, "clearbit": {}, "custom": view["custom"]},
        "owner": view["owner"],
        "website_url": view["website_url"],
        # funnelsync tracks the funnel, not revenue: MRR and ARR are always 0 (integer cents).
        "mrr": 0,
        "arr": 0,
        "billing-system-url": None,
        "chartmogul-url": f"{base_url.rstrip('/')}/dashboard#customer={view['uuid']}",
        "billing-system-type": system_name(first_kind),
        "currency": "USD",
        "currency-sign": "$",
        "created_at": view["created_at"],
    }


def contacts_json(conn: Connection, contact_ids: Sequence[int]) -> list[dict[str, Any]]:
    """Contacts in the commercial product's shape (``custom`` as an object of key: value)."""
    out = []
    for view in contact_view(conn, contact_ids):
        out.append({
            "uuid": view["uuid"],
            "customer_uuid": view["customer_uuid"],
            "customer_external_id": view["customer_external_id"],
            "data_source_uuid": view["data_source_uuid"],
            "external_id": view["external_id"],
            "first_name": view["first_name"],
            "last_name": view["last_name"],
            "position": view["position"],
            "title": view["title"],
            "email": view["email"],
            "phone": view["phone"],
            "linked_in": view["linked_in"],
            "twitter": view["twitter"],
            "notes": view["notes"],
            "custom": view["custom"],
            "created_at": iso(view["created_at"]),
            "updated_at": iso(view["updated_at"]),
        })
    return out


# ------------------------------------------------------------------ cursor pagination


def encode_cursor(last_id: int) -> str:
    """An opaque cursor after ``last_id`` (keyset pagination: stable while rows are added)."""
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The id a cursor points after (0 for none).

    Raises:
        Invalid: for a cursor this server did not hand out.
    """
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        kind, _, number = text.partition(":")
        # Bounded to the 64-bit id column: a larger id was a 500 from the database driver.
        if kind != "id" or not number.isdigit() or int(number) > 2**63 - 1:
            raise ValueError(text)
        return int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid.one(
            "cursor", "not a cursor this server returned; pass the 'cursor' of the previous page"
        ) from None


def per_page_value(raw: str | None, default: int = DEFAULT_PER_PAGE) -> int:
    """The page size from the query (1..MAX_PER_PAGE).

    Raises:
        Invalid: for a non-number or out-of-range size.
    """
    if raw is None or raw == "":
        return default
    # isdecimal, not isdigit: "²" is a digit that int() refuses (a 500).
    if not raw.strip().isdecimal() or not 1 <= int(raw) <= MAX_PER_PAGE:
        raise Invalid.one("per_page", f"expected a whole number from 1 to {MAX_PER_PAGE}, got {raw!r}")
    return int(raw)


def page_envelope(entries: list[dict[str, Any]], ids: list[int], per_page: int) -> dict[str, Any]:
    """``{"entries", "has_more", "cursor", "per_page"}`` from a page fetched with one extra row."""
    has_more = len(ids) > per_page
    return {
        "entries": entries[:per_page],
        "has_more": has_more,
        "per_page": per_page,
        "cursor": encode_cursor(ids[per_page - 1]) if has_more else None,
    }
