"""schemathesis against the OpenAPI document the app serves: every operation, a bounded number of generated
requests each, authenticated with a real API key; no 5xx and no response that breaks the document."""

from __future__ import annotations

import base64
from datetime import date, timedelta
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance
from sqlalchemy import Engine, create_engine

from api.app import create_app
from storage.api_keys import create_api_key

EXAMPLES = 8


def _labels() -> list[str]:
    # The document does not depend on the data: read it once from an app on an empty engine, for the ids.
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(create_engine("sqlite://")))
    return [result.ok().label for result in schema.get_all_operations()]


def _bounded_range(case: Any) -> Any:
    """Metrics over at most a year at a time: the API answers up to 10,000 periods (a day series over 27
    years), and on SQLite such a request takes many seconds; that is allowed, but not in every example."""
    query = case.query or {}
    try:
        start = date.fromisoformat(str(query.get("start-date")))
        end = date.fromisoformat(str(query.get("end-date")))
    except ValueError:
        return case
    if end - start > timedelta(days=366):
        query["end-date"] = (start + timedelta(days=366)).isoformat() if start.year < 9999 else str(end)
    return case


@pytest.mark.parametrize("label", _labels())
def test_served_openapi_document_holds(db_engine: Engine, label: str) -> None:
    with db_engine.begin() as conn:
        key = create_api_key(conn, "schemathesis")
    auth = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(db_engine))
    operation = schema.find_operation_by_label(label)
    assert operation is not None

    @given(case=operation.as_strategy().map(_bounded_range))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        # The request bodies are documented as open objects (the routes read and check JSON themselves), so
        # "a schema-valid request must be accepted" and its negative twin cannot hold; every other check runs.
        case.call_and_validate(headers=auth, excluded_checks=[positive_data_acceptance, negative_data_rejection])

    check()
