"""The customer filter grammar (pure): ``--where`` text parsed into conditions (``Condition``).

A filter is one or more conditions joined by ``AND``; several ``--where`` options AND together::

    country in (US, DE) AND status != Cancelled
    source = "Stripe EU"
    tag = vip
    custom.seats >= 10
    custom.plan in ("Pro", Enterprise)
    lead_created_at < 2025-01-01

Every error names the expression, the character where it went wrong and why, so the CLI can print it
as one line. ``storage.filters`` compiles the conditions into SQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in", "not in")


ORDER_OPERATORS = frozenset({"<", "<=", ">", ">="})


# Plain customer columns a filter may name, by kind. "category" fields take a fixed set of values.
TEXT_FIELDS = ("owner", "email", "name", "company", "city", "state", "zip", "website_domain")


TIME_FIELDS = ("lead_created_at", "free_trial_started_at", "subscriber_since")


FIELD_ALIASES = {
    "data_source": "source",
    "datasource": "source",
    "tags": "tag",
    "attribute": "custom",
    "attr": "custom",
    "custom_attribute": "custom",
    "domain": "website_domain",
}


FIELDS = (
    ("source", "source_kind", "country", "status", "lead_status", "tag", "custom.<key>")
    + TEXT_FIELDS
    + TIME_FIELDS
)


class FilterError(ValueError):
    """A filter that cannot be parsed or compiled: what, where (character position) and why."""

    def __init__(self, expression: str, position: int | None, reason: str) -> None:
        self.expression = expression
        self.position = position
        self.reason = reason
        where = f" at character {position + 1}" if position is not None else ""
        super().__init__(f"filter {expression!r}{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Value:
    """One literal as written: ``quoted`` values are always text (``"123"`` is not a number)."""

    text: str
    quoted: bool
    position: int


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``field op value`` comparison of a filter (the AST node)."""

    # canonical: source, source_kind, country, status, lead_status, tag, custom, a text or time column
    field: str
    key: str | None  # the custom attribute key for field == "custom"
    op: str  # one of OPERATORS
    values: tuple[Value, ...]  # one value, or several for in / not in
    expression: str  # the whole --where text, for error messages
    position: int  # where the condition starts in ``expression``

    @property
    def label(self) -> str:
        """The field as a user writes it (``custom.plan``)."""
        return f"custom.{self.key}" if self.field == "custom" else self.field


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
    | (?P<op>!=|<>|<=|>=|==|=|<|>)
    | (?P<lparen>\()
    | (?P<rparen>\))
    | (?P<comma>,)
    | (?P<word>[^\s"'(),=!<>]+)
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # string | op | lparen | rparen | comma | word | end
    text: str
    position: int


def _tokenize(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    if "\x00" in expression:
        # No stored text holds NUL (PostgreSQL refuses it in text): comparing with it there failed with a
        # DataError instead of an answer, so it is refused here, on both databases alike.
        raise FilterError(expression, expression.index("\x00"), "contains the NUL character (\\u0000)")
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:
            char = expression[pos]
            if char in "\"'":
                raise FilterError(expression, pos, f"unterminated quoted value starting with {char}")
            raise FilterError(expression, pos, f"unexpected character {char!r}")
        kind = match.lastgroup or ""
        if kind == "string":
            raw = match.group()
            text = re.sub(r"\\(.)", r"\1", raw[1:-1])
            tokens.append(_Token("string", text, pos))
        elif kind == "op":
            op = {"<>": "!=", "==": "="}.get(match.group(), match.group())
            tokens.append(_Token("op", op, pos))
        elif kind != "space":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(expression)))
    return tokens


class _Parser:
    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _tokenize(expression)
        self.index = 0

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def error(self, token: _Token, reason: str) -> FilterError:
        return FilterError(self.expression, token.position, reason)

    def is_word(self, token: _Token, word: str) -> bool:
        return token.kind == "word" and token.text.lower() == word

    def parse(self) -> list[Condition]:
        if self.peek().kind == "end":
            raise self.error(self.peek(), "empty filter: expected a condition such as 'country = US'")
        conditions = [self.condition()]
        while True:
            token = self.peek()
            if token.kind == "end":
                return conditions
            if self.is_word(token, "and") or token.text == "&&":
                self.take()
                conditions.append(self.condition())
                continue
            if self.is_word(token, "or") or token.text == "||":
                raise self.error(token, "OR is not supported: conditions combine with AND only")
            raise self.error(token, f"expected AND or the end of the filter, found {token.text!r}")

    def condition(self) -> Condition:
        start = self.peek()
        field, key = self.field()
        op = self.operator(field, key)
        if op in ("in", "not in"):
            values = self.value_list()
        else:
            values = (self.value(),)
        return Condition(field, key, op, values, self.expression, start.position)

    def field(self) -> tuple[str, str | None]:
        token = self.take()
        if token.kind != "word":
            found = "the end of the filter" if token.kind == "end" else repr(token.text)
            raise self.error(token, f"expected a field name, found {found}; fields: {', '.join(FIELDS)}")
        name = token.text
        lowered = name.lower()
        prefix, dot, key = lowered.partition(".")
        if dot:
            if FIELD_ALIASES.get(prefix, prefix) != "custom":
                raise self.error(
                    token, f"unknown field {name!r}: only custom attributes take a key (custom.<key>)"
                )
            key = name.split(".", 1)[1]
            if not key and self.peek().kind == "string":  # custom."key with spaces"
                key = self.take().text
            if not key:
                raise self.error(token, "custom attribute key missing: write custom.<key>")
            return "custom", key
        canonical = FIELD_ALIASES.get(lowered, lowered)
        if canonical == "custom":
            raise self.error(token, "custom attribute key missing: write custom.<key>")
        if canonical not in FIELDS:
            raise self.error(token, f"unknown field {name!r}; fields: {', '.join(FIELDS)}")
        return canonical, None

    def operator(self, field: str, key: str | None) -> str:
        token = self.take()
        if token.kind == "op":
            return token.text
        if self.is_word(token, "in"):
            return "in"
        if self.is_word(token, "not") and self.is_word(self.peek(), "in"):
            self.take()
            return "not in"
        found = "the end of the filter" if token.kind == "end" else repr(token.text)
        raise self.error(token, f"expected an operator (=, !=, <, <=, >, >=, in, not in), found {found}")

    def value(self) -> Value:
        token = self.take()
        if token.kind == "string":
            return Value(token.text, True, token.position)
        if token.kind == "word":
            if token.text.lower() in ("and", "or"):
                raise self.error(
                    token, f"expected a value, found {token.text.upper()}: quote it if it is one"
                )
            return Value(token.text, False, token.position)
        found = "the end of the filter" if token.kind == "end" else repr(token.text)
        raise self.error(token, f"expected a value, found {found}")

    def value_list(self) -> tuple[Value, ...]:
        token = self.take()
        if token.kind != "lparen":
            raise self.error(token, "expected '(' after in: write a list such as in (US, DE)")
        values = [self.value()]
        while True:
            token = self.take()
            if token.kind == "rparen":
                return tuple(values)
            if token.kind != "comma":
                found = "the end of the filter" if token.kind == "end" else repr(token.text)
                raise self.error(token, f"expected ',' or ')' in the list, found {found}")
            values.append(self.value())


def parse_filter(expression: str) -> list[Condition]:
    """Parse one filter expression (conditions joined by AND) into conditions.

    Args:
        expression: e.g. ``"country in (US, DE) AND tag = vip"``.

    Raises:
        FilterError: with the position and the reason when the text is not a valid filter.
    """
    return _Parser(expression).parse()


def parse_filters(expressions: Iterable[str] | str | None) -> list[Condition]:
    """Parse several ``--where`` expressions; all their conditions AND together."""
    if expressions is None:
        return []
    if isinstance(expressions, str):
        expressions = [expressions]
    conditions: list[Condition] = []
    for expression in expressions:
        conditions.extend(parse_filter(expression))
    return conditions
