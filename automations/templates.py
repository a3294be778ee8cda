"""Templates of action texts: ``{{ customer.FIELD }}`` and nothing else.

A field is one of the keys of the customer object (what ``funnelsync customers show --json`` prints),
``custom.KEY`` for a custom attribute, or ``FIELD[N]`` for an item of a list field (``data_sources[0]``).
Rendering escapes the value for where it goes (Slack's control characters, or none for JSON values,
which the JSON encoder escapes); an unknown field is refused when the rule is validated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

CUSTOMER_FIELDS = (
    "uuid", "name", "email", "company", "country", "state", "city", "zip", "website_url", "owner", "status",
    "lead_status", "lead_created_at", "free_trial_started_at", "subscriber_since", "created_at",
)
LIST_FIELDS = ("tags", "external_ids", "data_sources", "data_source_uuids")

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_FIELD = re.compile(
    r"\s*customer\.(?:(?P<custom>custom\.[A-Za-z0-9_.:-]+)|(?P<name>[a-z_]+)(?:\[(?P<index>\d+)\])?)\s*$"
)


class TemplateError(ValueError):
    """A placeholder that names no customer field."""


def _parse(body: str) -> tuple[str, int | None]:
    match = _FIELD.match(body)
    if match is None:
        raise TemplateError(f"{{{{{body}}}}} is not {{{{ customer.FIELD }}}}")
    if match["custom"]:
        return match["custom"], None
    name, index = match["name"], match["index"]
    if index is not None:
        if name not in LIST_FIELDS:
            raise TemplateError(f"customer.{name} is not a list (lists: {', '.join(LIST_FIELDS)})")
        return name, int(index)
    if name not in CUSTOMER_FIELDS and name not in LIST_FIELDS:
        raise TemplateError(f"unknown field customer.{name} (fields: {', '.join(CUSTOMER_FIELDS + LIST_FIELDS)}, "
                            "custom.KEY)")
    return name, None


def check_template(text: str) -> None:
    """Raise ``TemplateError`` for the first placeholder that is not a known customer field."""
    for match in _PLACEHOLDER.finditer(text):
        _parse(match.group(1))
    rest = _PLACEHOLDER.sub("", text)
    if "{{" in rest or "}}" in rest:
        raise TemplateError("an unclosed {{ or a stray }}")


def field_value(customer: Mapping[str, Any], body: str) -> Any:
    """The value a placeholder names (None when the customer has none)."""
    name, index = _parse(body)
    if name.startswith("custom."):
        return (customer.get("custom") or {}).get(name[7:])
    value = customer.get(name)
    if index is not None:
        items = list(value or [])
        return items[index] if index < len(items) else None
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return value


def render(text: str, customer: Mapping[str, Any], escape: Callable[[str], str] = lambda s: s) -> str:
    """The text with every placeholder replaced by the escaped value (empty for none)."""

    def one(match: re.Match[str]) -> str:
        value = field_value(customer, match.group(1))
        return "" if value is None else escape(str(value))

    return _PLACEHOLDER.sub(one, text)


def render_value(value: Any, customer: Mapping[str, Any]) -> Any:
    """A template in a JSON value (run_deployment parameters): strings rendered, the rest as given.

    A string that is one placeholder alone keeps the value's own type (a list stays a list).
    """
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value.strip())
        if whole is not None:
            return field_value(customer, whole.group(1))
        return render(value, customer)
    if isinstance(value, list):
        return [render_value(v, customer) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, customer) for k, v in value.items()}
    return value


def slack_escape(text: str) -> str:
    """Slack's three control characters (its message formatting guide): a customer's name cannot inject
    a mention or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
