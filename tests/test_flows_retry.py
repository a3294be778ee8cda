"""Which task failures Prefect retries (``flows.runtime.is_transient``): table-driven, no server needed."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.exc import OperationalError

from connectors.files.rows import FileUnreadable
from connectors.http import ApiError, CredentialsError
from flows.runtime import is_transient, one_line, retry_if_transient, slug
from jobs.secrets import SecretResolutionError
from jobs.sync import SyncError
from storage.sources import SourceNotFound


def _status_error(code: int) -> httpx.HTTPStatusError:
    request = httpx.Request("GET", "https://api.example.com/v1/customers")
    return httpx.HTTPStatusError("boom", request=request, response=httpx.Response(code, request=request))


@pytest.mark.parametrize(
    ("exc", "retried"),
    [
        (ApiError("stripe: GET /v1/customers answered 503 after 5 attempts", status=503), True),
        (ApiError("stripe: GET /v1/customers answered 429 after 5 attempts", status=429), True),
        (ApiError("stripe: GET /v1/customers/x answered 404", status=404), False),
        (CredentialsError("stripe refused the API key (401): check the api_key setting"), False),
        (SyncError("source 'x' is of kind 'csv', which is not pulled by a connector"), False),
        (SecretResolutionError("setting api_key refers to environment variable K, which is not set"), False),
        (SourceNotFound("no data source named 'x'"), False),
        (FileUnreadable("leads.csv: no column for the customer's e-mail or external id"), False),
        (_status_error(502), True),
        (_status_error(408), True),
        (_status_error(400), False),
        (httpx.ConnectError("connection refused"), True),
        (httpx.ReadTimeout("read timed out"), True),
        (OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")), True),
        (ConnectionResetError(), True),
        (ValueError("a bug"), False),
        (KeyError("id"), False),
    ],
)
def test_is_transient(exc: BaseException, retried: bool) -> None:
    assert is_transient(exc) is retried


def test_retry_condition_reads_the_failed_state() -> None:
    from prefect.states import Failed

    assert retry_if_transient(None, None, Failed(data=ApiError("503", status=503))) is True
    assert retry_if_transient(None, None, Failed(data=CredentialsError("401"))) is False


def test_helpers() -> None:
    assert slug("Website leads (EU)") == "website-leads-eu"
    assert one_line(CredentialsError("refused\nsecond line")) == "CredentialsError: refused"
