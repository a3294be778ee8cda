"""``funnelsync contacts``: list, show, add, edit, remove, with the HTTP API's validation (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from funnelsync.cli import app
from funnelsync.cli.common import CliError
from tests.api_support import api_client, new_customer, new_source


@pytest.fixture
def cli(db_url):
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(app, list(args), env={"FUNNELSYNC_DATABASE_URL": db_url, "COLUMNS": "200"})

    return invoke


def _ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.output) if result.output.lstrip().startswith(("{", "[")) else result.output


def _refused(result, code=2):
    assert isinstance(result.exception, CliError), (result.output, result.exception)
    assert result.exception.exit_code == code
    return str(result.exception)


def test_contacts_add_list_show_edit_remove(db_engine, cli):
    client = api_client(db_engine)
    ds = new_source(client)
    ada = new_customer(client, ds, "A-1", name="Ada Ltd")
    grace = new_customer(client, ds, "G-1", name="Grace Inc")

    added = _ok(cli("contacts", "add", "--customer", "crm:A-1", "--first-name", "Ada", "--last-name", "Lovelace",
                    "--email", " ada@example.com ", "--title", "CEO", "--custom", "nickname=Countess", "--json"))
    assert added["uuid"].startswith("con_") and added["customer_uuid"] == ada["uuid"]
    assert added["email"] == "ada@example.com" and added["custom"] == {"nickname": "Countess"}
    other = _ok(cli("contacts", "add", "--customer", grace["uuid"], "--phone", "+44 20 7946 0000", "--json"))

    # The API sees what the CLI wrote, and the other way round.
    via_api = client.get(f"/v1/customers/{ada['uuid']}/contacts").json()["entries"]
    assert [c["uuid"] for c in via_api] == [added["uuid"]] and via_api[0]["title"] == "CEO"
    everyone = _ok(cli("contacts", "list", "--json"))
    assert {c["uuid"] for c in everyone} == {added["uuid"], other["uuid"]}
    only_ada = _ok(cli("contacts", "list", "--customer", "crm:A-1", "--json"))
    assert [c["uuid"] for c in only_ada] == [added["uuid"]]
    table = _ok(cli("contacts", "list", "--customer", ada["uuid"]))
    assert "Ada Lovelace" in table and "1 contact" in table and "Grace" not in table

    edited = _ok(cli("contacts", "edit", added["uuid"], "--title", "Founder", "--phone", "+1 555 0100", "--json"))
    assert edited["title"] == "Founder" and edited["phone"] == "+1 555 0100" and edited["first_name"] == "Ada"
    cleared = _ok(cli("contacts", "edit", added["uuid"], "--phone", "", "--json"))
    assert cleared["phone"] is None and cleared["title"] == "Founder"
    shown = _ok(cli("contacts", "show", added["uuid"], "--json"))
    assert shown == {**cleared, "updated_at": shown["updated_at"]}

    removed = _ok(cli("contacts", "remove", other["uuid"], "--json"))
    assert removed == {"removed": other["uuid"]}
    assert client.get(f"/v1/contacts/{other['uuid']}").status_code == 404
    assert "no contact with uuid" in _refused(cli("contacts", "show", other["uuid"]), 1)


def test_contacts_refuse_what_the_api_refuses_with_the_same_reason(db_engine, cli):
    client = api_client(db_engine)
    ds = new_source(client)
    ada = new_customer(client, ds, "A-1", name="Ada Ltd")

    for option, value, field in (("--email", "not-an-address", "email"), ("--title", "x" * 256, "title"),
                                 ("--position", "-1", "position")):
        reason = _refused(cli("contacts", "add", "--customer", ada["uuid"], "--first-name", "Ada", option, value))
        api = client.post(f"/v1/customers/{ada['uuid']}/contacts",
                          json={"first_name": "Ada", field: int(value) if field == "position" else value})
        assert api.status_code == 422
        api_reason = next(e["reason"] for e in api.json()["errors"] if e["field"] == field)
        assert f"{option}: {api_reason}" in reason
    nobody = _refused(cli("contacts", "add", "--customer", ada["uuid"], "--title", "CEO"))
    api = client.post(f"/v1/customers/{ada['uuid']}/contacts", json={"title": "CEO"})
    assert api.json()["errors"][0]["reason"] in nobody
    assert "no customer" in _refused(cli("contacts", "add", "--customer", "crm:nope", "--email", "a@b.example"), 1)
    assert "nothing to change" in _refused(cli("contacts", "edit", "con_missing"))
    # Nothing was half-written by the refusals.
    assert client.get(f"/v1/customers/{ada['uuid']}/contacts").json()["entries"] == []
