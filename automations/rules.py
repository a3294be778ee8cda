"""Automation rules: what one is made of and how it is checked.

A rule is a mapping (from a rule file or an API body)::

    name: us-trials                  # letters, digits, - and _
    trigger: trial_started           # storage.automation_rules.TRIGGERS
    where: "country = US"            # optional, the metrics filter grammar
    backfill: false                  # optional
    actions:
      - webhook: {url: https://hooks.example.com/x, secret: env:HOOK_SECRET, max_attempts: 8}

``validate_rule`` turns it into its stored definition (``{"name", "trigger", "params", "where",
"backfill", "actions": [{"kind": …, …}]}``) or a list of ``RuleError``: each names the path of the
faulty value (``("actions", 0, "webhook", "url")``), so a file can point at its line and the API at
its field. Everything is checked that can be without a database; ``automations.apply`` checks the rest
(the data sources a condition names) and protects literal secrets before storing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from automations.templates import TemplateError, check_template
from funnelsync.records import CUSTOMER_STATUSES, LEAD_STATUSES
from storage.automation_rules import TRIGGERS
from storage.filter_grammar import FilterError, parse_filters

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
RULE_KEYS = ("name", "trigger", "where", "backfill", "actions", "days_before", "days_after", "from", "to")
# A trigger's parameters sit beside it in the rule: (name, required).
TRIGGER_PARAMS: dict[str, tuple[tuple[str, bool], ...]] = {
    "trial_ending": (("days_before", True),),
    "trial_expired": (("days_after", True),),
    "status_changed": (("from", False), ("to", False)),
}
ACTION_KINDS = ("webhook", "slack", "set", "run_deployment", "merge")
DEFAULT_MAX_ATTEMPTS = 8
MAX_ATTEMPTS_LIMIT = 100
REFERENCE_PREFIXES = ("env:", "prefect-secret:", "local-secret:")
# Fields a ``set`` action may set: they become manual edits.
SET_FIELDS = ("owner", "lead_status", "tag", "name", "company", "country", "state", "city", "zip", "website_url")

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class RuleError:
    """One thing wrong with a rule: where (a path into the rule or file) and why."""

    path: Path
    message: str

    @property
    def field(self) -> str:
        """The path as a dotted field name (``automations.0.actions.1.webhook.url``)."""
        return ".".join(str(p) for p in self.path)


class RuleValidationError(ValueError):
    """A rule (or file) with errors; nothing of it may be stored."""

    def __init__(self, errors: list[RuleError]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e.field or 'rule'}: {e.message}" for e in errors))


def is_reference(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(REFERENCE_PREFIXES)


class _Checker:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.errors: list[RuleError] = []

    def fail(self, path: Path, message: str) -> None:
        self.errors.append(RuleError(self.base + path, message))


def validate_rule(data: Any, base: Path = ()) -> tuple[dict[str, Any] | None, list[RuleError]]:
    """The stored definition of one rule, or None and what is wrong (paths under ``base``)."""
    c = _Checker(base)
    if not isinstance(data, Mapping):
        c.fail((), "a rule is a mapping with name, trigger and actions")
        return None, c.errors
    for key in data:
        if key not in RULE_KEYS:
            c.fail((str(key),), f"unknown key {key!r} (keys: {', '.join(RULE_KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        c.fail(("name",), "name is required: 1 to 100 letters, digits, - or _")
    trigger = data.get("trigger")
    if trigger not in TRIGGERS:
        c.fail(("trigger",), f"trigger must be one of {', '.join(TRIGGERS)}")
    params = _params(c, data, trigger if isinstance(trigger, str) else None)
    where = data.get("where")
    if where is not None:
        if not isinstance(where, str):
            c.fail(("where",), "where is a filter expression (text), e.g. \"country = US\"")
            where = None
        else:
            try:
                parse_filters(where)
            except FilterError as exc:
                c.fail(("where",), str(exc))
    backfill = data.get("backfill", False)
    if not isinstance(backfill, bool):
        c.fail(("backfill",), "backfill is true or false")
    actions = _actions(c, data.get("actions"), trigger)
    if c.errors:
        return None, c.errors
    return {
        "name": name, "trigger": trigger, "params": params, "where": where or None, "backfill": backfill,
        "actions": actions,
    }, []


def _params(c: _Checker, data: Mapping[str, Any], trigger: str | None) -> dict[str, Any]:
    wanted = dict(TRIGGER_PARAMS.get(trigger or "", ()))
    params: dict[str, Any] = {}
    for key in ("days_before", "days_after", "from", "to"):
        if key not in data:
            if wanted.get(key):
                c.fail((key,), f"trigger {trigger} needs {key}: a whole number of days")
            continue
        if key not in wanted:
            c.fail((key,), f"{key} does not apply to trigger {trigger}")
            continue
        value = data[key]
        if key.startswith("days_"):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3650:
                c.fail((key,), f"{key} is a whole number of days from 0 to 3650")
                continue
        elif value not in CUSTOMER_STATUSES:
            c.fail((key,), f"{key} must be a status: {', '.join(CUSTOMER_STATUSES)}")
            continue
        params[key] = value
    return params


def _actions(c: _Checker, actions: Any, trigger: Any) -> list[dict[str, Any]]:
    if not isinstance(actions, list) or not actions:
        c.fail(("actions",), "actions is a list of at least one action (" + ", ".join(ACTION_KINDS) + ")")
        return []
    out: list[dict[str, Any]] = []
    for index, action in enumerate(actions):
        path: Path = ("actions", index)
        if not isinstance(action, Mapping) or len(action) != 1:
            c.fail(path, "an action is one of " + ", ".join(f"{k}: …" for k in ACTION_KINDS))
            continue
        ((kind, spec),) = action.items()
        if kind not in ACTION_KINDS:
            c.fail(path + (str(kind),), f"unknown action {kind!r} (actions: {', '.join(ACTION_KINDS)})")
            continue
        checked = _ACTION_CHECKS[kind](c, path + (kind,), spec, trigger)
        if checked is not None:
            out.append({"kind": kind, **checked})
    return out


def _mapping(c: _Checker, path: Path, spec: Any, kind: str, allowed: tuple[str, ...]) -> Mapping[str, Any] | None:
    if not isinstance(spec, Mapping):
        c.fail(path, f"{kind} takes a mapping ({', '.join(allowed)})")
        return None
    for key in spec:
        if key not in allowed:
            c.fail(path + (str(key),), f"unknown {kind} setting {key!r} (settings: {', '.join(allowed)})")
    return spec


def _url(c: _Checker, path: Path, value: Any, *, secret_allowed: bool) -> str | None:
    if secret_allowed and is_reference(value):
        return str(value)
    if not isinstance(value, str) or not value:
        c.fail(path, "url is required")
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        hint = " or a secret reference (env:VAR, prefect-secret:BLOCK)" if secret_allowed else ""
        c.fail(path, f"url must be an http(s) URL{hint}")
        return None
    return value


def _max_attempts(c: _Checker, path: Path, spec: Mapping[str, Any]) -> int:
    value = spec.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ATTEMPTS_LIMIT:
        c.fail(path + ("max_attempts",), f"max_attempts is a whole number from 1 to {MAX_ATTEMPTS_LIMIT}")
        return DEFAULT_MAX_ATTEMPTS
    return value


def _template(c: _Checker, path: Path, value: Any) -> None:
    if isinstance(value, str):
        try:
            check_template(value)
        except TemplateError as exc:
            c.fail(path, str(exc))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _template(c, path + (i,), item)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _template(c, path + (str(key),), item)


def _webhook(c: _Checker, path: Path, spec: Any, trigger: Any) -> dict[str, Any] | None:
    spec = _mapping(c, path, spec, "webhook", ("url", "secret", "max_attempts"))
    if spec is None:
        return None
    url = _url(c, path + ("url",), spec.get("url"), secret_allowed=True)
    secret = spec.get("secret")
    if not isinstance(secret, str) or not secret:
        c.fail(path + ("secret",), "secret is required (it signs every delivery): a literal, env:VAR or "
                                   "prefect-secret:BLOCK")
    return {"url": url, "secret": secret, "max_attempts": _max_attempts(c, path, spec)}


def _slack(c: _Checker, path: Path, spec: Any, trigger: Any) -> dict[str, Any] | None:
    spec = _mapping(c, path, spec, "slack", ("url", "text", "max_attempts"))
    if spec is None:
        return None
    url = _url(c, path + ("url",), spec.get("url"), secret_allowed=True)
    text = spec.get("text")
    if not isinstance(text, str) or not text.strip():
        c.fail(path + ("text",), "text is required")
    else:
        _template(c, path + ("text",), text)
    return {"url": url, "text": text, "max_attempts": _max_attempts(c, path, spec)}


def _set(c: _Checker, path: Path, spec: Any, trigger: Any) -> dict[str, Any] | None:
    if not isinstance(spec, Mapping) or not spec:
        c.fail(path, "set takes a mapping of field: value (" + ", ".join(SET_FIELDS) + ", custom.KEY)")
        return None
    fields: dict[str, Any] = {}
    for key, value in spec.items():
        key = str(key)
        where = path + (key,)
        if key.startswith("custom.") and len(key) > 7:
            if value is not None and not isinstance(value, (str, int, float, bool)):
                c.fail(where, f"{key} takes a text, number or true/false")
                continue
        elif key == "tag":
            tags = value if isinstance(value, list) else [value]
            if not tags or not all(isinstance(t, str) and t.strip() for t in tags):
                c.fail(where, "tag is a tag name or a list of them")
                continue
            value = [t.strip() for t in tags]
        elif key == "lead_status":
            if value not in LEAD_STATUSES:
                c.fail(where, f"lead_status must be one of {', '.join(LEAD_STATUSES)}")
                continue
        elif key in SET_FIELDS:
            if not isinstance(value, str):
                c.fail(where, f"{key} takes a text")
                continue
        else:
            c.fail(where, f"set cannot set {key!r} (fields: {', '.join(SET_FIELDS)}, custom.KEY)")
            continue
        if isinstance(value, str):
            _template(c, where, value)
        fields[key] = value
    return {"fields": fields, "max_attempts": _max_attempts(c, path, {})}


def _run_deployment(c: _Checker, path: Path, spec: Any, trigger: Any) -> dict[str, Any] | None:
    spec = _mapping(c, path, spec, "run_deployment", ("name", "parameters", "max_attempts"))
    if spec is None:
        return None
    name = spec.get("name")
    if not isinstance(name, str) or name.count("/") != 1 or not all(name.split("/")):
        c.fail(path + ("name",), "name is the deployment as FLOW/DEPLOYMENT, e.g. sync-source/sync-source")
    parameters = spec.get("parameters", {})
    if not isinstance(parameters, Mapping):
        c.fail(path + ("parameters",), "parameters is a mapping of parameter: value")
        parameters = {}
    _template(c, path + ("parameters",), dict(parameters))
    return {"name": name, "parameters": dict(parameters), "max_attempts": _max_attempts(c, path, spec)}


def _merge(c: _Checker, path: Path, spec: Any, trigger: Any) -> dict[str, Any] | None:
    if spec != "duplicate":
        c.fail(path, "merge takes one value: duplicate")
        return None
    if trigger != "duplicate_found":
        c.fail(path, "merge applies only to trigger duplicate_found")
        return None
    return {"what": "duplicate", "max_attempts": 1}


_ACTION_CHECKS = {
    "webhook": _webhook, "slack": _slack, "set": _set, "run_deployment": _run_deployment, "merge": _merge,
}


def validate_document(data: Any) -> tuple[list[dict[str, Any]], list[RuleError]]:
    """A rule file's content (``{"automations": [rule, …]}``): the definitions, or every error."""
    if not isinstance(data, Mapping) or "automations" not in data:
        return [], [RuleError((), "a rule file is a mapping with the key automations: a list of rules")]
    errors = [RuleError((str(k),), f"unknown key {k!r} (only automations)") for k in data if k != "automations"]
    rules = data["automations"]
    if not isinstance(rules, list):
        return [], errors + [RuleError(("automations",), "automations is a list of rules")]
    definitions: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        definition, rule_errors = validate_rule(rule, ("automations", index))
        errors.extend(rule_errors)
        if definition is None:
            continue
        if definition["name"] in seen:
            errors.append(RuleError(("automations", index, "name"), f"a second rule named {definition['name']!r}"))
            continue
        seen.add(definition["name"])
        definitions.append(definition)
    return (definitions if not errors else []), errors


def rule_document(definition: Mapping[str, Any]) -> dict[str, Any]:
    """A stored definition back in the shape a rule file (or the API) writes it."""
    out: dict[str, Any] = {"name": definition["name"], "trigger": definition["trigger"]}
    out.update(definition.get("params") or {})
    if definition.get("where"):
        out["where"] = definition["where"]
    out["backfill"] = bool(definition.get("backfill"))
    actions: list[dict[str, Any]] = []
    for action in definition.get("actions") or []:
        kind = action["kind"]
        body = {k: v for k, v in action.items() if k != "kind"}
        if kind == "merge":
            actions.append({"merge": "duplicate"})
        elif kind == "set":
            actions.append({"set": body["fields"]})
        else:
            actions.append({kind: body})
    out["actions"] = actions
    return out
