"""The HTTP client every pull connector shares: httpx for transport, tenacity for retries.

Whether to retry and how long to wait are two small pure functions, ``should_retry`` and
``wait_seconds``, so the policy is tested on its own (table-driven) and read in one place:

- retry 429, 408, 409, every 5xx and transport errors (timeouts, resets, DNS);
- vendor signals: Stripe ``Stripe-Should-Retry: true|false``, Chargebee ``api_request_limit_exceeded``
  in an error body, and a connector hook (``retryable_body``) for throttles hidden in a 200 body,
  such as Braintree GraphQL ``errors[].extensions.errorClass == "RESOURCE_LIMIT"``;
- wait what the server asks (``Retry-After`` in seconds or as an HTTP-date, ``X-RateLimit-Reset`` /
  ``RateLimit-Reset`` as epoch seconds, delta seconds or HTTP-date), floored above zero so a
  ``Retry-After: 0`` never becomes a tight loop (dlt shipped that bug) and capped; otherwise
  exponential backoff with jitter;
- a bounded number of attempts, then an ``ApiError`` naming the source, the request and the status.

401 and 403 are never retried: ``CredentialsError`` says which source refused and the likely cause.
No error message carries an ``Authorization`` header, a query string or any configured secret.
"""

from __future__ import annotations

import email.utils
import json
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC
from typing import Any, Self

import httpx
import orjson
import tenacity

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DEFAULT_MAX_ATTEMPTS = 5
BACKOFF_BASE_SECONDS = 0.5
MIN_WAIT_SECONDS = 0.5
MAX_WAIT_SECONDS = 60.0

RETRY_STATUSES = frozenset({408, 409, 429})
# Error codes some APIs put in a JSON body to say "slow down" (Chargebee sends it with a 429, but
# proxies have been seen to rewrite the status).
# Stripe once answered rate limits with 400 and ``code: rate_limit``; its client libraries still treat
# that answer as a rate limit.
RETRYABLE_BODY_CODES = frozenset(
    {"api_request_limit_exceeded", "rate_limited", "rate_limit_exceeded", "rate_limit", "lock_timeout"}
)

BodyCheck = Callable[[httpx.Response], bool]
# Seconds to wait read from a response the generic headers say nothing about, or None.
WaitHint = Callable[[httpx.Response], float | None]


class ConnectorError(Exception):
    """Base of every error a connector raises on purpose."""


class CredentialsError(ConnectorError):
    """The source refused the credentials (401) or their permissions (403). Never retried."""


class ApiError(ConnectorError):
    """A request failed for good: a non-retryable status, or retries exhausted."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RetryableResponse(Exception):
    """Raised inside an attempt so tenacity retries it; carries the response for ``wait_seconds``."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def sleep(seconds: float) -> None:
    """The sleep the client uses between attempts; tests patch ``connectors.http.sleep``."""
    time.sleep(seconds)


# --------------------------------------------------------------------------------------------------
# The policy: two pure functions
# --------------------------------------------------------------------------------------------------


def body_json(response: httpx.Response) -> Any:
    """The decoded JSON body of a response, or None when it is not JSON."""
    return _json_body(response)


def _json_body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except (ValueError, UnicodeDecodeError):
        return None


def body_error_code(response: httpx.Response) -> str | None:
    """The vendor error code of a JSON error body, if any (Chargebee, Recurly, GoCardless, Stripe shapes)."""
    body = _json_body(response)
    if not isinstance(body, dict):
        return None
    for key in ("api_error_code", "error_code", "code"):
        if isinstance(body.get(key), str):
            return body[key]
    error = body.get("error")
    if isinstance(error, dict):
        for key in ("code", "type", "reason"):
            if isinstance(error.get(key), str):
                return error[key]
        errors = error.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            reason = errors[0].get("reason")
            if isinstance(reason, str):
                return reason
    return None


def graphql_resource_limited(response: httpx.Response) -> bool:
    """True when a GraphQL 200 body reports ``errors[].extensions.errorClass == "RESOURCE_LIMIT"``.

    Braintree's GraphQL API throttles with HTTP 200 and an error in the body. Example::

        {"data": null, "errors": [{"message": "Too many requests",
                                    "extensions": {"errorClass": "RESOURCE_LIMIT"}}]}
    """
    if response.status_code != 200:
        return False
    body = _json_body(response)
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return False
    for error in body["errors"]:
        extensions = error.get("extensions") if isinstance(error, dict) else None
        if isinstance(extensions, dict) and extensions.get("errorClass") in (
            "RESOURCE_LIMIT",
            "SERVICE_AVAILABILITY",
        ):
            return True
    return False


def should_retry(outcome: httpx.Response | BaseException, retryable_body: BodyCheck | None = None) -> bool:
    """Whether a response or a transport exception deserves another attempt.

    Args:
        outcome: the response received, or the exception raised instead of one.
        retryable_body: a connector hook flagging a successful-looking body as a throttle
            (Braintree GraphQL answers 200 with ``RESOURCE_LIMIT``).

    Returns:
        True for 429, 408, 409, 5xx, transport errors and the vendors' retry signals; False for
        success, 401/403 and every other 4xx.
    """
    if isinstance(outcome, RetryableResponse):
        return True
    if isinstance(outcome, BaseException):
        # A malformed base_url (no http:// or https://) fails the same way every time.
        return isinstance(outcome, httpx.TransportError) and not isinstance(outcome, httpx.UnsupportedProtocol)
    status = outcome.status_code
    if status in (401, 403):
        return False
    # Stripe tells its clients explicitly; a rate limit is still always waited out.
    throttled = 400 <= status < 500 and body_error_code(outcome) in RETRYABLE_BODY_CODES
    stripe_hint = outcome.headers.get("Stripe-Should-Retry")
    if stripe_hint is not None and status != 429 and not throttled:
        return stripe_hint.strip().lower() == "true"
    if status in RETRY_STATUSES or status >= 500:
        return True
    if 400 <= status < 500:
        return throttled
    if retryable_body is not None and 200 <= status < 300:
        return retryable_body(outcome)
    return False


def _seconds_from_header(value: str, now: float, *, epoch_allowed: bool) -> float | None:
    """Seconds to wait from a header value: delta seconds, epoch seconds or an HTTP-date."""
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp() - now
    # Reset headers carry either an epoch (Recurly, Intercom: "1700000000") or a delta (IETF draft,
    # "30"). No delta is a billion seconds long, so the magnitude tells them apart.
    if epoch_allowed and number > 1_000_000_000:
        return number - now
    return number


def wait_seconds(
    attempt: int,
    response: httpx.Response | None,
    *,
    now: float | None = None,
    base: float = BACKOFF_BASE_SECONDS,
    cap: float = MAX_WAIT_SECONDS,
    floor: float = MIN_WAIT_SECONDS,
    rand: Callable[[], float] = random.random,
    hinted_cap: float | None = None,
    hint: WaitHint | None = None,
) -> float:
    """How long to sleep before attempt ``attempt + 1``.

    Args:
        attempt: the number of the attempt that just failed (1 for the first).
        response: the failed response, or None after a transport error.
        now: the current epoch time (tests pin it); default ``time.time()``.
        base: the first backoff step in seconds.
        cap: the longest wait, whatever the server asks.
        floor: the shortest wait, so ``Retry-After: 0`` never spins.
        rand: a source of uniform [0, 1) numbers for the jitter.
        hinted_cap: the longest wait the server may ask for with a header or ``hint`` (default ``cap``):
            an API whose limit is counted over minutes (Recurly's 5-minute window) needs longer.
        hint: a connector's reading of the response when its headers say nothing (HubSpot names its
            rate-limit window in the body).

    Returns:
        ``Retry-After`` (seconds or HTTP-date) when present, else ``X-RateLimit-Reset`` /
        ``RateLimit-Reset`` (epoch, delta or HTTP-date), else ``base * 2**(attempt-1)`` with
        "equal jitter" (between half and all of the step); always within ``[floor, cap]``.
    """
    current = time.time() if now is None else now
    if response is not None:
        headers = response.headers
        hinted: float | None = None
        if "Retry-After" in headers:
            hinted = _seconds_from_header(headers["Retry-After"], current, epoch_allowed=False)
        if hinted is None:
            for name in ("X-RateLimit-Reset", "RateLimit-Reset"):
                if name in headers:
                    hinted = _seconds_from_header(headers[name], current, epoch_allowed=True)
                    if hinted is not None:
                        break
        if hinted is None and hint is not None:
            hinted = hint(response)
        if hinted is not None:
            return min(cap if hinted_cap is None else hinted_cap, max(floor, hinted))
    step = base * (2 ** max(0, attempt - 1))
    jittered = step / 2 + rand() * step / 2
    return min(cap, max(floor, jittered))


# --------------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------------


# Pacing leaves this share of each interval unused: a thread descheduled between its turn and its send
# (tens of milliseconds on a busy machine) must not let the next one land in the same second as the
# whole quota; 5 % of a second's quota is 50 ms of slack whatever the rate.
PACING_SLACK = 0.05


class RequestPacer:
    """At most ``per_second`` request starts a second, shared by every thread of one source.

    A start waits until ``(1 + PACING_SLACK) / per_second`` has passed since the previous start was let
    through (times read under the lock, when each is let through): requests are spread evenly instead
    of bursting up to a window's quota, so several workers together stay within the limit in every
    one-second window. Retries take turns too: a throttled API sees no extra burst.
    """

    def __init__(self, per_second: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep_fn: Callable[[float], None] = time.sleep) -> None:
        if not per_second > 0:
            raise ValueError(f"a request rate must be positive, not {per_second!r}")
        self.interval = (1.0 + PACING_SLACK) / per_second
        self._clock, self._sleep = clock, sleep_fn
        self._lock = threading.Lock()
        self._last = float("-inf")

    def wait(self) -> None:
        """Block until this caller may start a request."""
        while True:
            with self._lock:
                now = self._clock()
                due = self._last + self.interval
                if now >= due:
                    self._last = now
                    return
            self._sleep(due - now)


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _vendor_message(response: httpx.Response) -> str:
    """The human message of an error body, short (Stripe, Chargebee, Recurly, GoCardless shapes)."""
    body = _json_body(response)
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
        message = message or body.get("message") or body.get("error_msg")
        if message is None and isinstance(body.get("errors"), list) and body["errors"]:
            first = body["errors"][0]
            message = first.get("message") if isinstance(first, dict) else first
    if message is None:
        message = response.text[:200] if response.headers.get("content-type", "").startswith("text/") else ""
    return " ".join(str(message).split())[:300]


def decode_json(body: bytes) -> Any:
    """Decode a JSON response body: orjson parses a page of records in under half the time of the
    standard library, which matters when a sync's reader does little else.

    The bodies orjson refuses and the standard library takes (NaN, a UTF-16 body) decode as the standard
    library decodes them. One difference stays: an integer beyond 64 bits (signed, or unsigned when
    positive) becomes a float, as it does in a JavaScript client; the vendors send identifiers that long
    as strings.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


class HttpClient:
    """One source's HTTP session: base URL, auth, timeouts, retries, and errors without secrets.

    ``auth`` is HTTP Basic (user, password); ``bearer_token`` sends ``Authorization: Bearer …``.
    ``pacer`` paces every attempt of every thread using the client; a source's clients share one
    (``RequestPacer``), so its limit holds whichever endpoint a request goes to.

    Example::

        client = HttpClient("stripe", "https://api.stripe.com", bearer_token="sk_test_…",
                            credentials_hint="check the api_key setting")
        body = client.get_json("/v1/customers", params={"limit": 100})
    """

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        bearer_token: str | None = None,
        secrets: Iterable[str] = (),
        credentials_hint: str = "check the credentials in the source settings",
        url_setting: str = "base_url",
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retryable_body: BodyCheck | None = None,
        max_hinted_wait: float = MAX_WAIT_SECONDS,
        wait_hint: WaitHint | None = None,
        sleep_fn: Callable[[float], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        pacer: RequestPacer | None = None,
    ) -> None:
        self.source = source
        self.base_url = base_url.rstrip("/")
        self.credentials_hint = credentials_hint
        # The setting that holds ``base_url``, named in connection errors (Braintree has two endpoints).
        self.url_setting = url_setting
        self.max_attempts = max(1, max_attempts)
        self.retryable_body = retryable_body
        self.max_hinted_wait = max_hinted_wait
        self.wait_hint = wait_hint
        self._sleep_fn = sleep_fn
        self.pacer = pacer
        self._secrets = [s for s in secrets if s] + [a for a in (auth or ()) if a] + [bearer_token or ""]
        all_headers = dict(headers or {})
        if bearer_token:
            all_headers["Authorization"] = f"Bearer {bearer_token}"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=all_headers,
            auth=httpx.BasicAuth(*auth) if auth else None,
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sleep(self, seconds: float) -> None:
        # Looked up at call time so tests can patch ``connectors.http.sleep`` after the client exists.
        (self._sleep_fn or sleep)(seconds)

    def _where(self, method: str, url: str) -> str:
        # The path only: query strings can carry cursors or (on some APIs) keys, and never help.
        path = httpx.URL(url).path if "://" in url else url.split("?", 1)[0]
        return f"{method} {path}"

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | list[tuple[str, Any]] | None = None,
        json_body: Any = None,
        content: bytes | str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request with the retry policy; return the successful response.

        Raises:
            CredentialsError: on 401/403, at once.
            ApiError: on another 4xx, or when every attempt failed.
        """
        where = self._where(method, url)

        def attempt() -> httpx.Response:
            if self.pacer is not None:
                self.pacer.wait()
            response = self._client.request(
                method, url, params=params, json=json_body, content=content, headers=headers
            )
            if response.status_code in (401, 403):
                raise self._credentials_error(response, where)
            if should_retry(response, self.retryable_body):
                response.read()
                raise RetryableResponse(response)
            return response

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            response = exc.response if isinstance(exc, RetryableResponse) else None
            return wait_seconds(
                state.attempt_number, response, hinted_cap=self.max_hinted_wait, hint=self.wait_hint
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(should_retry),
            wait=wait,
            stop=tenacity.stop_after_attempt(self.max_attempts),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            response = retrying(attempt)
        except RetryableResponse as exc:
            raise self._api_error(
                exc.response, where, f"still failing after {self.max_attempts} attempts"
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ApiError(
                _scrub(f"{self.source}: base_url {self.base_url!r} is not a usable http(s) URL ({exc})", self._secrets)
            ) from None
        except httpx.TransportError as exc:
            raise ApiError(
                _scrub(
                    f"{self.source}: {where} failed after {self.max_attempts} attempts: "
                    f"{type(exc).__name__}: {exc} (is {self.url_setting} {self.base_url} reachable?)",
                    self._secrets,
                )
            ) from None
        if response.status_code >= 400:
            raise self._api_error(response, where, "refused")
        return response

    def get_json(self, url: str, params: Mapping[str, Any] | list[tuple[str, Any]] | None = None) -> Any:
        """GET ``url`` (relative to the base URL, or absolute) and decode its JSON body."""
        return self._decode(self.request("GET", url, params=params), "GET", url)

    def request_json(self, request: Any) -> Any:
        """Send a ``connectors.paging.PageRequest`` and decode its JSON body."""
        response = self.request(
            request.method, request.url, params=request.params or None, json_body=request.json_body
        )
        return self._decode(response, request.method, request.url)

    def post_json(self, url: str, json_body: Any) -> Any:
        """POST a JSON body and decode the JSON answer."""
        return self._decode(self.request("POST", url, json_body=json_body), "POST", url)

    def _decode(self, response: httpx.Response, method: str, url: str) -> Any:
        try:
            return decode_json(response.content)
        except ValueError:
            raise ApiError(
                f"{self.source}: {self._where(method, url)} answered HTTP {response.status_code} with a body "
                f"that is not JSON (content-type {response.headers.get('content-type', 'none')}); "
                f"is {self.url_setting} {self.base_url} the API endpoint?",
                response.status_code,
            ) from None

    def _credentials_error(self, response: httpx.Response, where: str) -> CredentialsError:
        if response.status_code == 401:
            cause = f"the credentials were rejected: {self.credentials_hint}"
        else:
            cause = (
                "the credentials are valid but lack permission for this resource: grant read access "
                f"or use another key ({self.credentials_hint})"
            )
        return CredentialsError(
            _scrub(f"{self.source}: HTTP {response.status_code} on {where}: {cause}", self._secrets)
        )

    def _api_error(self, response: httpx.Response, where: str, what: str) -> ApiError:
        detail = _vendor_message(response)
        message = f"{self.source}: {where} {what}: HTTP {response.status_code}" + (
            f": {detail}" if detail else ""
        )
        return ApiError(_scrub(message, self._secrets), response.status_code)
