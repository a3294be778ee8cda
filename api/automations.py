"""``/v1/automations``: the automation rules, as a rule file holds them, one JSON object each.

The body of ``POST`` and ``PUT`` is one rule (``name``, ``trigger``, its parameters, ``where``,
``backfill``, ``actions``: docs/automations.md); a rule with errors answers 422 naming each field
(``actions.0.webhook.url``) and stores nothing. Secrets are answered as their references only.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Connection

from api.auth import require_api_key
from api.errors import ApiError, Invalid, JsonBody, NotFound, body_example, no_nul_in_url
from automations.apply import apply_definitions
from automations.rules import RuleError, RuleValidationError, rule_document, validate_rule
from storage.automation_rules import StoredRule, delete_rule, get_rule, list_rules

router = APIRouter(prefix="/v1/automations", tags=["automations"],
                   dependencies=[Depends(require_api_key), Depends(no_nul_in_url)])

EXAMPLE = {
    "name": "us-trials", "trigger": "trial_started", "where": "country = US",
    "actions": [{"webhook": {"url": "https://hooks.example.com/x", "secret": "env:HOOK_SECRET"}}],
}


def _json(rule: StoredRule) -> dict[str, Any]:
    return {**rule_document(rule.definition), "applied_at": rule.applied_at.isoformat(),
            "updated_at": rule.updated_at.isoformat()}


def _invalid(errors: list[RuleError]) -> Invalid:
    # Paths inside a rule file start with automations.N: a body is one rule.
    fields = [".".join(str(p) for p in e.path[2:]) if e.path[:1] == ("automations",) else e.field for e in errors]
    return Invalid([{"field": field or "body", "reason": e.message} for field, e in zip(fields, errors)])


def _store(conn: Connection, body: Any) -> StoredRule:
    definition, errors = validate_rule(body)
    if errors or definition is None:
        raise _invalid(errors)
    try:
        apply_definitions(conn, [definition])
    except RuleValidationError as exc:
        raise _invalid(exc.errors) from None
    stored = get_rule(conn, definition["name"])
    assert stored is not None
    return stored


@router.get("")
def list_automations(request: Request) -> dict[str, Any]:
    """Every rule, by name."""
    with request.app.state.engine.connect() as conn:
        return {"entries": [_json(r) for r in list_rules(conn)]}


@router.post("", status_code=201, openapi_extra=body_example(EXAMPLE))
def create_automation(request: Request, body: JsonBody) -> dict[str, Any]:
    """Create a rule (409 when one of that name exists: change it with PUT)."""
    with request.app.state.engine.begin() as conn:
        name = body.get("name") if isinstance(body, dict) else None
        if isinstance(name, str) and get_rule(conn, name) is not None:
            raise ApiError(409, f"an automation named {name!r} exists already: PUT /v1/automations/{name} changes it")
        return _json(_store(conn, body))


@router.get("/{name}")
def retrieve_automation(request: Request, name: str) -> dict[str, Any]:
    with request.app.state.engine.connect() as conn:
        rule = get_rule(conn, name)
    if rule is None:
        raise NotFound(f"no automation named {name!r}")
    return _json(rule)


@router.put("/{name}", openapi_extra=body_example(EXAMPLE))
def replace_automation(request: Request, name: str, body: JsonBody) -> dict[str, Any]:
    """Create or replace the rule of that name (the body's name, if given, must be it)."""
    if not isinstance(body, dict):
        raise Invalid.one("body", "a rule is a JSON object with name, trigger and actions")
    if body.get("name", name) != name:
        raise Invalid.one("name", f"the body names {body.get('name')!r}, the URL {name!r}")
    with request.app.state.engine.begin() as conn:
        return _json(_store(conn, {**body, "name": name}))


@router.delete("/{name}", status_code=204)
def delete_automation(request: Request, name: str) -> Response:
    """Remove a rule; its past occurrences and deliveries stay in the outbox."""
    with request.app.state.engine.begin() as conn:
        if not delete_rule(conn, name):
            raise NotFound(f"no automation named {name!r}")
    return Response(status_code=204)
