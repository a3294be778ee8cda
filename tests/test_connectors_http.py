"""The retry policy (pure functions, table-driven) and the client built on it (respx)."""

from __future__ import annotations

import email.utils

import httpx
import pytest
import respx

from connectors.http import (
    MAX_WAIT_SECONDS,
    MIN_WAIT_SECONDS,
    ApiError,
    CredentialsError,
    HttpClient,
    decode_json,
    graphql_resource_limited,
    should_retry,
    wait_seconds,
)

NOW = 1_700_000_000.0


def resp(status: int, headers: dict[str, str] | None = None, json: object = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json=json)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (resp(200), False),
        (resp(201), False),
        (resp(400), False),
        (resp(404), False),
        (resp(401), False),
        (resp(403), False),
        (resp(408), True),
        (resp(409), True),
        (resp(429), True),
        (resp(500), True),
        (resp(502), True),
        (resp(503), True),
        (resp(500, {"Stripe-Should-Retry": "false"}), False),
        (resp(400, {"Stripe-Should-Retry": "true"}), True),
        (resp(429, {"Stripe-Should-Retry": "false"}), True),
        (resp(400, json={"api_error_code": "api_request_limit_exceeded", "http_status_code": 400}), True),
        (resp(400, json={"api_error_code": "invalid_request"}), False),
        (resp(400, json={"error": {"type": "invalid_request_error", "code": "lock_timeout"}}), True),
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.UnsupportedProtocol("no scheme"), False),
        (ValueError("bug"), False),
    ],
)
def test_should_retry(outcome: object, expected: bool) -> None:
    assert should_retry(outcome) is expected  # type: ignore[arg-type]


def test_should_retry_body_hook_flags_braintree_resource_limit_in_200() -> None:
    throttled = resp(
        200,
        json={
            "data": None,
            "errors": [{"message": "slow down", "extensions": {"errorClass": "RESOURCE_LIMIT"}}],
        },
    )
    fine = resp(200, json={"data": {"ping": "pong"}})
    assert should_retry(throttled, graphql_resource_limited) is True
    assert should_retry(fine, graphql_resource_limited) is False
    assert should_retry(throttled) is False  # without the hook a 200 is a success


def http_date(epoch: float) -> str:
    return email.utils.formatdate(epoch, usegmt=True)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "2.5"}, 2.5),
        ({"Retry-After": "0"}, MIN_WAIT_SECONDS),  # never a tight loop
        ({"Retry-After": "-3"}, MIN_WAIT_SECONDS),
        ({"Retry-After": "86400"}, MAX_WAIT_SECONDS),  # capped
        ({"Retry-After": http_date(NOW + 12)}, 12.0),
        ({"Retry-After": http_date(NOW - 100)}, MIN_WAIT_SECONDS),  # a date in the past
        ({"X-RateLimit-Reset": str(int(NOW + 20))}, 20.0),  # Recurly: epoch seconds
        ({"RateLimit-Reset": "15"}, 15.0),  # IETF draft: delta seconds
        ({"RateLimit-Reset": http_date(NOW + 9)}, 9.0),  # GoCardless: HTTP-date
        ({"X-RateLimit-Reset": str(int(NOW - 5))}, MIN_WAIT_SECONDS),
        ({"Retry-After": "4", "X-RateLimit-Reset": str(int(NOW + 30))}, 4.0),  # Retry-After wins
        ({"Retry-After": "soon"}, None),  # unparseable: fall back to backoff
    ],
)
def test_wait_seconds_honours_server_hints(headers: dict[str, str], expected: float | None) -> None:
    waited = wait_seconds(1, resp(429, headers), now=NOW, rand=lambda: 1.0)
    if expected is None:
        assert waited == pytest.approx(0.5)  # base step, full jitter value
    else:
        assert waited == pytest.approx(expected, abs=1.0 if "GMT" in str(headers) else 1e-9)


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (1, 0.0, MIN_WAIT_SECONDS),  # half of 0.5 floored to 0.5
        (2, 0.0, 0.5),
        (2, 1.0, 1.0),
        (3, 0.5, 1.5),
        (4, 1.0, 4.0),
        (12, 1.0, MAX_WAIT_SECONDS),
    ],
)
def test_wait_seconds_exponential_backoff_with_jitter(attempt: int, rand: float, expected: float) -> None:
    assert wait_seconds(attempt, None, now=NOW, rand=lambda: rand) == pytest.approx(expected)
    assert wait_seconds(attempt, resp(503), now=NOW, rand=lambda: rand) == pytest.approx(expected)


def make_client(**kwargs: object) -> tuple[HttpClient, list[float]]:
    slept: list[float] = []
    client = HttpClient(
        "stripe",
        "https://api.example.test",
        auth=("sk_test_SUPERSECRET", ""),
        credentials_hint="check the api_key setting",
        sleep_fn=slept.append,
        **kwargs,  # type: ignore[arg-type]
    )
    return client, slept


@respx.mock
def test_client_waits_out_429_then_succeeds() -> None:
    route = respx.get("https://api.example.test/v1/x").mock(
        side_effect=[resp(429, {"Retry-After": "3"}), resp(500), resp(200, json={"ok": True})]
    )
    client, slept = make_client()
    assert client.get_json("/v1/x") == {"ok": True}
    assert route.call_count == 3
    assert slept[0] == 3.0 and len(slept) == 2


@respx.mock
def test_client_attempts_are_bounded() -> None:
    route = respx.get("https://api.example.test/v1/x").mock(return_value=resp(503, json={"message": "down"}))
    client, slept = make_client(max_attempts=3)
    with pytest.raises(ApiError) as info:
        client.get_json("/v1/x", params={"limit": 100})
    assert route.call_count == 3 and len(slept) == 2
    assert "stripe" in str(info.value) and "GET /v1/x" in str(info.value) and "503" in str(info.value)
    assert "limit" not in str(info.value)


@respx.mock
def test_client_401_fails_fast_without_the_secret() -> None:
    route = respx.get("https://api.example.test/v1/x").mock(
        return_value=resp(401, json={"error": {"message": "Invalid API Key provided: sk_test_SUPERSECRET"}})
    )
    client, slept = make_client()
    with pytest.raises(CredentialsError) as info:
        client.get_json("/v1/x")
    assert route.call_count == 1 and slept == []
    message = str(info.value)
    assert "stripe" in message and "401" in message and "api_key" in message
    assert "SUPERSECRET" not in message and "Authorization" not in message


@respx.mock
def test_client_403_names_permissions() -> None:
    respx.get("https://api.example.test/v1/x").mock(return_value=resp(403))
    client, _ = make_client()
    with pytest.raises(CredentialsError, match="permission"):
        client.get_json("/v1/x")


@respx.mock
def test_client_other_4xx_is_not_retried_and_scrubbed() -> None:
    route = respx.get("https://api.example.test/v1/x").mock(
        return_value=resp(400, json={"error": {"message": "bad param near sk_test_SUPERSECRET"}})
    )
    client, _ = make_client()
    with pytest.raises(ApiError) as info:
        client.get_json("/v1/x")
    assert route.call_count == 1
    assert "bad param" in str(info.value) and "SUPERSECRET" not in str(info.value)


@respx.mock
def test_client_transport_errors_are_retried_then_reported() -> None:
    route = respx.get("https://api.example.test/v1/x").mock(side_effect=httpx.ConnectError("refused"))
    client, slept = make_client(max_attempts=2)
    with pytest.raises(ApiError, match="reachable"):
        client.get_json("/v1/x")
    assert route.call_count == 2 and len(slept) == 1


@respx.mock
def test_client_sleep_is_patchable_at_module_level(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr("connectors.http.sleep", slept.append)
    respx.get("https://api.example.test/v1/x").mock(
        side_effect=[resp(429, {"Retry-After": "2"}), resp(200, json={})]
    )
    client = HttpClient("s", "https://api.example.test")
    client.get_json("/v1/x")
    assert slept == [2.0]


@respx.mock
def test_client_sets_a_timeout_on_every_request() -> None:
    route = respx.get("https://api.example.test/v1/x").mock(return_value=resp(200, json={}))
    client, _ = make_client()
    client.get_json("/v1/x")
    timeout = route.calls.last.request.extensions["timeout"]
    assert all(timeout[k] for k in ("connect", "read", "write", "pool"))


def test_client_malformed_base_url_fails_at_once() -> None:
    slept: list[float] = []
    client = HttpClient("stripe", "api.stripe.com", sleep_fn=slept.append)
    with pytest.raises(ApiError, match="not a usable http"):
        client.get_json("/v1/customers")
    assert slept == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"list": [{"customer": {"id": "cb_1", "created_at": 1700000000}}], "next_offset": "[\\"1\\",\\"0\\"]"}',
        b'{"id": 18446744073709551615, "low": -9223372036854775808}',  # the 64-bit bounds stay integers
        b'{"amount": NaN, "limit": Infinity}',  # not JSON strictly, but what json.loads has always taken
        '{"name": "Zoë"}'.encode("utf-16"),  # the stdlib detects UTF-16; orjson takes UTF-8 only
        b'{"a": 1, "a": 2}',
    ],
)
def test_decode_json_gives_what_the_standard_library_gives(body: bytes) -> None:
    import json
    import math

    decoded, expected = decode_json(body), json.loads(body)
    if "amount" in expected:
        assert math.isnan(decoded["amount"]) and decoded["limit"] == math.inf
    else:
        assert decoded == expected
        assert [type(v) for v in decoded.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize("body", [b"<html>502 Bad Gateway</html>", b"", b'{"truncated": '])
def test_client_body_that_is_not_json_is_an_api_error(body: bytes) -> None:
    with respx.mock(base_url="https://api.example.test") as mock:
        mock.get("/things").respond(200, content=body, headers={"content-type": "text/html"})
        client, _ = make_client()
        with pytest.raises(ApiError, match="GET /things answered HTTP 200 with a body that is not JSON"):
            client.get_json("/things")
