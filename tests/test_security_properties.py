"""Property-based tests of every parser that reads outside input: the CSV reader, the date parser, the email
normaliser, the filter grammar, the webhook signature checks and the API's request bodies.

For any input each either answers or refuses with its own error type whose message names what was wrong;
nothing else escapes (no 500, no traceback). The default runs are small; ``test_high_example_count_run``
(``slow``) runs the pure properties at a high example count, bounded in time.
"""

from __future__ import annotations

import base64
import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.files.dates import DAY_FIRST, MONTH_FIRST, AmbiguousDateColumn, make_date_parser
from connectors.files.flexible_csv import FlexibleCsvFile
from connectors.files.rows import FileUnreadable
from connectors.signatures import (
    WebhookPayloadError,
    WebhookSignatureError,
    parse_braintree_notification,
    verify_basic_auth,
    verify_braintree_signature,
    verify_gocardless_signature,
    verify_hubspot_signature,
    verify_intercom_signature,
    verify_recurly_signature,
    verify_segment_signature,
    verify_stripe_signature,
)
from funnelsync.normalize import normalize_email
from storage.filter_grammar import FIELDS, OPERATORS, FilterError, parse_filters
from tests.api_support import api_client, new_customer, new_source

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NOW = 1_760_000_000.0

# Text that looks like what each parser meets, mixed with anything at all.
date_like = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A[0-9]{1,4}[-/.][0-9]{1,2}[-/.][0-9]{1,4}( [0-9]{1,2}:[0-9]{2}(:[0-9]{2})?( ?[AP]M)?)?"
                  r"( UTC| GMT|Z|[+-][0-9]{2}:?[0-9]{2})?\Z"),
    st.from_regex(r"\A-?[0-9]{1,16}(\.[0-9]{1,4})?\Z"),
    st.datetimes(timezones=st.sampled_from([UTC, ZoneInfo("Europe/Berlin")])).map(datetime.isoformat),
)
email_like = st.one_of(st.text(max_size=40), st.emails().map(str), st.from_regex(r"\A[ .+a-zA-Z@]{0,20}\Z"))
filter_words = st.sampled_from([*FIELDS, *OPERATORS, "custom.plan", "AND", "OR", "(", ")", ",", '"', "'", "\\",
                                "US", "vip", "2025-01-01", "10", "&&", "!", "<>", "=="])
filter_like = st.one_of(st.text(max_size=40), st.lists(filter_words, max_size=10).map(" ".join))


def check_date(value: str, order: str | None) -> None:
    parser = make_date_parser("Signup Date", None, ZoneInfo("America/New_York"), order)
    try:
        parsed = parser(value)
    except ValueError as exc:
        assert str(exc).strip(), f"{value!r}: refused without a reason"
        return
    assert isinstance(parsed, datetime) and parsed.utcoffset() is not None


def check_email(value: str) -> None:
    key = normalize_email(value)
    assert key is None or (isinstance(key, str) and "@" in key and key == key.lower())
    assert normalize_email(key) == key  # the key of a key is itself: stored keys match their lookups


def check_filter(expression: str) -> None:
    try:
        conditions = parse_filters(expression)
    except FilterError as exc:
        assert exc.reason.strip() and repr(expression)[1:-1][:10] in str(exc), str(exc)
        assert exc.position is None or 0 <= exc.position <= len(expression)
        return
    assert all(c.op in OPERATORS and c.values for c in conditions)


def check_signatures(body: bytes, header: str | None, other: str | None) -> None:
    calls = [
        lambda: verify_stripe_signature(body, header, "whsec_x", clock=lambda: NOW),
        lambda: verify_recurly_signature(body, header, "rs_x", clock=lambda: NOW),
        lambda: verify_gocardless_signature(body, header, "gc_x"),
        lambda: verify_intercom_signature(body, header, "ic_x"),
        lambda: verify_segment_signature(body, header, "sg_x"),
        lambda: verify_basic_auth(header, "user", "pass"),
        lambda: verify_hubspot_signature("POST", ["https://h.example/webhooks/hs"], body, header, other, "hs_x",
                                         clock=lambda: NOW),
        lambda: verify_braintree_signature(header, other, "pub", "priv"),
    ]
    for call in calls:
        try:
            call()
        except WebhookSignatureError as exc:
            assert str(exc).strip()
        else:  # a random header is never a valid signature
            raise AssertionError(f"accepted {header!r} / {other!r}")
    try:
        parse_braintree_notification(other or "")
    except WebhookPayloadError as exc:
        assert str(exc).strip()


@FAST
@given(value=date_like, order=st.sampled_from([None, DAY_FIRST, MONTH_FIRST, "%d.%m.%Y"]))
def test_date_parser_answers_or_names_the_problem(value: str, order: str | None) -> None:
    check_date(value, order)


@FAST
@given(value=email_like)
def test_email_normaliser_is_total_and_idempotent(value: str) -> None:
    check_email(value)


@FAST
@given(expression=filter_like)
def test_filter_grammar_answers_or_names_the_problem(expression: str) -> None:
    check_filter(expression)


headers = st.one_of(st.none(), st.text(max_size=80),
                    st.from_regex(r"\At=[0-9]{0,12},v1=[0-9a-f]{0,64}\Z"),
                    st.from_regex(r"\A[0-9]{0,13},[0-9a-f]{0,64}\Z"),
                    st.binary(max_size=30).map(lambda b: "Basic " + base64.b64encode(b).decode()))


@FAST
@given(body=st.binary(max_size=200), header=headers, other=st.one_of(st.none(), st.text(max_size=60)))
def test_signature_checks_refuse_anything_unsigned_with_a_reason(body: bytes, header: str | None,
                                                                 other: str | None) -> None:
    check_signatures(body, header, other)


cells = st.one_of(st.text(max_size=12), date_like, email_like,
                  st.sampled_from(["", " ", '"', "a,b", "x\ny", "\x00", "=1+1", "ZZ", "US", "1,5", "\ufeff"]))
HEADER_CHOICES = ["Customer ID", "E-mail", "Full Name", "Signup Date", "Trial Start", "Country", "Tags", "Plan",
                  "Zip", "", "Customer ID", "weird;header"]


def check_csv(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "leads.csv"
        path.write_bytes(raw)
        source = FlexibleCsvFile(path, tz=UTC)
        try:
            source.prepare()
            rows = list(source.rows())
        except FileUnreadable as exc:
            assert "leads.csv" in str(exc) or "--" in str(exc), str(exc)
            return
        except AmbiguousDateColumn as exc:
            assert str(exc).strip()
            return
    for row in rows:
        assert row.record is not None or row.errors
        for error in row.errors:
            assert error.row >= 2 and error.reason.strip(), error


@st.composite
def csv_files(draw: Any) -> bytes:
    columns = draw(st.lists(st.sampled_from(HEADER_CHOICES), min_size=1, max_size=6))
    delimiter = draw(st.sampled_from([",", ";", "\t"]))
    rows = draw(st.lists(st.lists(cells, min_size=0, max_size=len(columns) + 1), max_size=5))

    def line(values: list[str]) -> str:
        return delimiter.join('"' + v.replace('"', '""') + '"' if draw(st.booleans()) else v for v in values)

    text = "\n".join([line(columns), *(line(r) for r in rows)])
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
    if draw(st.booleans()):
        data = draw(st.binary(max_size=40)) + data  # garbage in front
    return data


@settings(max_examples=40, deadline=None)
@given(raw=csv_files())
def test_csv_reader_reads_or_names_the_problem(raw: bytes) -> None:
    check_csv(raw)


# --- the API's request bodies ---------------------------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                         st.text(max_size=20), st.sampled_from(["cus_x", "2024-01-01", "Integer", "String", ""]))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=10), inner, max_size=3)), max_leaves=8)
BODY_KEYS = ["name", "email", "first_name", "last_name", "tags", "custom", "key", "type", "value", "from", "into",
             "customer_uuid", "data_source_uuid", "external_id", "position", "emails", "customer_uuids", "uuid",
             "customers", "phone", "linked_in", "notes", "source", "title"]
json_bodies = st.one_of(json_values, st.dictionaries(st.sampled_from(BODY_KEYS), json_values, max_size=5))
ROUTES = [
    ("POST", "/v1/data_sources"),
    ("POST", "/v1/contacts"),
    ("POST", "/v1/customers/{cus}/contacts"),
    ("PATCH", "/v1/contacts/{con}"),
    ("PUT", "/v1/contacts/{con}"),
    ("POST", "/v1/customers/merges"),
    ("POST", "/v1/customers/unmerges"),
    ("POST", "/v1/customers/{cus}/attributes/tags"),
    ("DELETE", "/v1/customers/{cus}/attributes/tags"),
    ("POST", "/v1/customers/attributes/tags"),
    ("POST", "/v1/customers/attributes/custom"),
    ("PATCH", "/v1/customers/{cus}/attributes/custom"),
    ("PUT", "/v1/customers/{cus}/attributes/custom"),
    ("POST", "/v1/customers/{cus}/attributes/custom"),
    ("DELETE", "/v1/customers/{cus}/attributes/custom"),
    ("PATCH", "/v1/customers/{cus}"),
]


@pytest.fixture
def api_world(db_engine: Any) -> dict[str, Any]:
    client = api_client(db_engine)
    ds = new_source(client)
    customer = new_customer(client, ds, "c1", email="c1@example.com")
    contact = client.post(f"/v1/customers/{customer['uuid']}/contacts",
                          json={"email": "k@example.com", "data_source_uuid": ds})
    assert contact.status_code == 201, contact.text
    return {"client": client, "cus": customer["uuid"], "con": contact.json()["uuid"], "ds": ds}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=json_bodies)
def test_api_request_bodies_answer_or_name_the_field(api_world: dict[str, Any], route: tuple[str, str],
                                                     body: Any) -> None:
    method, template = route
    path = template.format(cus=api_world["cus"], con=api_world["con"])
    response = api_world["client"].request(method, path, content=json.dumps(body),
                                           headers={"Content-Type": "application/json"})
    assert response.status_code < 500, f"{method} {path} {body!r}: {response.status_code} {response.text}"
    if response.status_code >= 400:
        answer = response.json()
        assert answer["code"] == response.status_code and answer["message"].strip(), answer
        if response.status_code == 422:
            assert answer["errors"] and all(e["field"] and e["reason"] for e in answer["errors"]), answer


# --- the bounded high-example-count run -----------------------------------------------------------


@pytest.mark.slow
def test_high_example_count_run() -> None:
    """The pure properties above at 10-15x their examples: a fixed count, so the run is bounded (under 10 s of
    CPU here)."""
    many = settings(max_examples=800, deadline=None, database=None)
    many(given(value=date_like, order=st.sampled_from([None, DAY_FIRST, MONTH_FIRST]))(check_date))()
    many(given(value=email_like)(check_email))()
    many(given(expression=filter_like)(check_filter))()
    settings(max_examples=300, deadline=None, database=None)(
        given(body=st.binary(max_size=200), header=headers, other=st.one_of(st.none(), st.text(max_size=60)))(
            check_signatures))()
    settings(max_examples=200, deadline=None, database=None)(given(raw=csv_files())(check_csv))()
