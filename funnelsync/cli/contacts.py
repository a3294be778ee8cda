"""``funnelsync contacts list|show|add|edit|remove``: the people of a customer, as the HTTP API edits them.

Validation is storage's ``check_contact_fields``, the one the API uses: the same value is refused with
the same reason in both. Contacts added here are hand-made (no re-sync removes them).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from funnelsync.cli.common import app, console, fail, get_engine, print_json

contacts_app = typer.Typer(help="List, show, add, edit and remove the contacts of customers.", no_args_is_help=True)
app.add_typer(contacts_app, name="contacts")

CustomerOpt = Annotated[str | None, typer.Option("--customer", help="A customer uuid (cus_…) or SOURCE:EXTERNAL_ID.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON only.")]
ContactArg = Annotated[str, typer.Argument(metavar="CONTACT", help="The contact's uuid (con_…).")]
Text = Annotated[str | None, typer.Option()]
PositionOpt = Annotated[int | None, typer.Option("--position", help="Order among the customer's contacts.")]
CustomOpt = Annotated[list[str] | None, typer.Option("--custom", help="key=value custom field (repeatable).")]


def _customer(conn: Any, ref: str) -> int:
    from storage.customers import resolve_customer

    found = resolve_customer(conn, ref)
    if found is None:
        fail(f"--customer {ref!r}: no customer with that uuid or SOURCE:EXTERNAL_ID (see funnelsync customers list)")
    return found


def _contact(conn: Any, uuid: str) -> int:
    from storage.contacts import ContactNotFound, contact_id

    try:
        return contact_id(conn, uuid)
    except ContactNotFound:
        fail(f"no contact with uuid {uuid!r} (see funnelsync contacts list)")


def _fields(values: dict[str, Any], *, creating: bool) -> dict[str, Any]:
    from storage.contacts import check_contact_fields

    given = {name: value for name, value in values.items() if value is not None}
    fields, errors = check_contact_fields(given, creating=creating)
    if errors:
        fail("; ".join(f"{'--' + name.replace('_', '-') if name != 'body' else 'contact'}: {reason}"
                       for name, reason in errors), 2)
    return fields


def _custom(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--custom {pair!r}: expected key=value", 2)
        out[key.strip()] = value
    return out


def _view(conn: Any, pk: int) -> dict[str, Any]:
    from storage.contacts import contact_view

    item = contact_view(conn, [pk])[0]
    item.pop("id", None)
    item.pop("customer_id", None)
    return item


def _print_one(item: dict[str, Any], as_json: bool, title: str | None = None) -> None:
    if as_json:
        print_json(item)
        return
    table = Table(title=title, show_header=False)
    for key, value in item.items():
        table.add_row(key, "" if value is None else str(value))
    console.print(table)


@contacts_app.command("list")
def contacts_list(
    customer: CustomerOpt = None,
    email: Annotated[str | None, typer.Option("--email", help="Only contacts with this email.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List contacts (of one customer with --customer)."""
    from storage.contacts import contact_view, list_contact_ids

    with get_engine().connect() as conn:
        customer_pk = _customer(conn, customer) if customer else None
        items = contact_view(conn, list_contact_ids(conn, customer_id=customer_pk, email=email))
    for item in items:
        item.pop("id", None)
        item.pop("customer_id", None)
    if as_json:
        print_json(items)
        return
    table = Table("uuid", "customer", "name", "email", "phone", "title")
    for item in items:
        name = " ".join(part for part in (item["first_name"], item["last_name"]) if part)
        table.add_row(item["uuid"], item["customer_uuid"], name, item["email"] or "", item["phone"] or "",
                      item["title"] or "")
    console.print(table, markup=False)
    console.print(f"{len(items)} contact{'s' if len(items) != 1 else ''}", highlight=False)


@contacts_app.command("show")
def contacts_show(contact: ContactArg, as_json: JsonOpt = False) -> None:
    """Show one contact."""
    with get_engine().connect() as conn:
        item = _view(conn, _contact(conn, contact))
    _print_one(item, as_json)


@contacts_app.command("add")
def contacts_add(
    customer: Annotated[str, typer.Option("--customer", help="A customer uuid (cus_…) or SOURCE:EXTERNAL_ID.")],
    first_name: Text = None,
    last_name: Text = None,
    email: Text = None,
    phone: Text = None,
    title: Text = None,
    linked_in: Text = None,
    twitter: Text = None,
    notes: Text = None,
    position: PositionOpt = None,
    external_id: Annotated[str | None, typer.Option(help="The contact's id in your system.")] = None,
    custom: CustomOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a contact to a customer (one of --first-name, --last-name, --email, --phone is needed)."""
    from storage.contacts import create_contact

    fields = _fields({"first_name": first_name, "last_name": last_name, "email": email, "phone": phone,
                      "title": title, "linked_in": linked_in, "twitter": twitter, "notes": notes,
                      "position": position}, creating=True)
    extra = _custom(custom)
    with get_engine().begin() as conn:
        pk = create_contact(conn, _customer(conn, customer), fields, custom=extra,
                            external_id=(external_id or "").strip() or None)
        item = _view(conn, pk)
    _print_one(item, as_json, title="Contact added")


@contacts_app.command("edit")
def contacts_edit(
    contact: ContactArg,
    first_name: Text = None,
    last_name: Text = None,
    email: Text = None,
    phone: Text = None,
    title: Text = None,
    linked_in: Text = None,
    twitter: Text = None,
    notes: Text = None,
    position: PositionOpt = None,
    custom: CustomOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change fields of a contact (an empty value, e.g. --phone '', clears the field)."""
    from storage.contacts import update_contact

    fields = _fields({"first_name": first_name, "last_name": last_name, "email": email, "phone": phone,
                      "title": title, "linked_in": linked_in, "twitter": twitter, "notes": notes,
                      "position": position}, creating=False)
    extra = _custom(custom)
    if not fields and not extra:
        fail("nothing to change: give at least one field option (see funnelsync contacts edit --help)", 2)
    with get_engine().begin() as conn:
        pk = _contact(conn, contact)
        update_contact(conn, pk, fields, custom=extra)
        item = _view(conn, pk)
    _print_one(item, as_json, title="Contact updated")


@contacts_app.command("remove")
def contacts_remove(contact: ContactArg, as_json: JsonOpt = False) -> None:
    """Delete a contact."""
    from storage.contacts import delete_contact

    with get_engine().begin() as conn:
        pk = _contact(conn, contact)
        item = _view(conn, pk)
        delete_contact(conn, pk)
    if as_json:
        print_json({"removed": item["uuid"]})
    else:
        console.print(f"Removed contact {item['uuid']}.", highlight=False)
