"""Webhook receivers: ``POST /webhooks/{source_name}`` for every kind fed by pushes (``Feed.PUSHED``).

These routes do not take the API key: each request authenticates by the integration's own signature (or
what stands for one), which the kind's own class checks over the RAW body (``parse_webhook`` of
``connectors.push.WebhookReceiver``). This module is the router, the same for every kind, and its
order of work keeps the promise that a bad webhook stores nothing:

1. read the raw body, refusing more than ``MAX_BODY_BYTES`` (413) before reading it all;
2. find the source (404 unknown, 409 disabled) and resolve its secret settings; one that cannot be
   resolved (an unset environment variable…) is left empty and logged for the operator;
3. let its kind verify and read the delivery: 401 bad signature, or no secret to verify it with (the
   sender learns nothing of the configuration; the log names the problem), 422 bad payload, 500
   unusable settings;
4. a push-only kind's partial records are completed with the stored values; the customers a pulled
   integration's delivery names are read again through the source's connector (``delivery_records``: thin
   events, and a record must carry all its subscriptions; the connector applies the integration's rule);
5. the records are written in ONE transaction (``jobs.pushes``).

A failure to re-read from the vendor answers 502, so the vendor retries the delivery later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from sqlalchemy import Engine

from connectors.base import Connector, Feed, SettingsError
from connectors.http import ConnectorError
from connectors.push import (
    APP_STORE_NOTIFICATIONS,
    ENDPOINTS,
    GOOGLE_PLAY_RTDN,
    SEGMENT_TRACKING,
    WEBHOOK,
    Rereader,
    WebhookContext,
    WebhookReceiver,
)
from connectors.registry import SOURCE_KINDS, connector_class, source_class
from connectors.signatures import WebhookPayloadError, WebhookSecretMissing, WebhookSignatureError
from jobs.pushes import store_partials, store_records
from jobs.secrets import SecretResolutionError, resolve_settings, resolve_settings_leniently
from storage.api_keys import verify_api_key
from storage.removal import remove_source_customers
from storage.sources import get_source

MAX_BODY_BYTES = 1024 * 1024
UNVERIFIABLE = "webhook signature could not be verified"

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])

ConnectorFactory = Callable[[str, str, Mapping[str, Any]], Connector]


class WebhookRejected(Exception):
    """A delivery refused with an HTTP status and a one-line reason (never a secret)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _default_connector(kind: str, name: str, settings: Mapping[str, Any]) -> Connector:
    return connector_class(kind)(settings, source_name=name)


async def read_body_limited(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, byte for byte, or ``WebhookRejected(413)`` as soon as it exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise WebhookRejected(413, f"webhook body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise WebhookRejected(413, f"webhook body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def receiver_of(kind: str) -> type[WebhookReceiver] | None:
    """The class that reads deliveries of ``kind``, None when the kind is not fed by pushes."""
    if kind not in SOURCE_KINDS or Feed.PUSHED not in source_class(kind).feeds:
        return None
    return cast(type[WebhookReceiver], source_class(kind))


def _api_key_check(engine: Engine) -> Callable[[str], bool]:
    def valid(key: str) -> bool:
        with engine.connect() as conn:
            return bool(verify_api_key(conn, key))

    return valid


def handle_webhook(
    engine: Engine,
    source_name: str,
    headers: Mapping[str, str],
    body: bytes,
    connector_factory: ConnectorFactory = _default_connector,
    url: str = "",
    endpoint: str = WEBHOOK,
    call: str = "",
) -> dict[str, Any]:
    """Verify, parse, re-read and store one delivery; the counts as a JSON-ready dict.

    ``url`` is the URL the delivery was received on (HubSpot signs it); ``endpoint`` the protocol it came
    by (``connectors.push.ENDPOINTS``), ``call`` the call type a Segment tracking path names.

    Raises:
        WebhookRejected: 404 unknown source or kind without webhooks, 409 disabled source, 401 bad
            signature, 422 bad payload, 500 unusable settings, 502 the vendor could not be read.
    """
    with engine.connect() as conn:
        source = get_source(conn, source_name)
    if source is None:
        raise WebhookRejected(404, f"no data source named {source_name!r}")
    if not source.enabled:
        # Refused (not accepted and dropped): the vendor keeps retrying until the source is enabled again.
        raise WebhookRejected(409, f"data source {source_name!r} is disabled")
    kind = str(source.kind)
    receiver = receiver_of(kind)
    if receiver is None or endpoint not in receiver.endpoints:
        path = ENDPOINTS[endpoint].format(source=source_name, call=call or "batch")
        raise WebhookRejected(404, f"data source {source_name!r} is of kind {kind}, which receives nothing at {path}")
    settings, problems = resolve_settings_leniently(source.settings or {})
    for problem in problems:
        log.error("webhook for %s: source misconfigured: %s", source_name, problem)
    context = WebhookContext(url=url, api_key_valid=_api_key_check(engine), call=call)
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        delivery = receiver.parse_delivery(endpoint, settings, lowered, body, context)
    except WebhookSignatureError as exc:
        if isinstance(exc, WebhookSecretMissing) or problems:
            # Unverifiable like any unsigned request; what is missing is the operator's business.
            log.error("webhook for %s refused, cannot verify: %s", source_name, exc)
            raise WebhookRejected(401, UNVERIFIABLE) from None
        log.warning("webhook for %s refused: %s", source_name, exc)
        raise WebhookRejected(401, str(exc)) from None
    except SettingsError as exc:
        raise WebhookRejected(500, str(exc)) from None
    except (WebhookPayloadError, ValueError) as exc:
        # ValueError: a field a record refuses (a malformed date, a country that is not alpha-2).
        raise WebhookRejected(422, str(exc)) from None
    if problems:
        # Verified, yet a setting the follow-up needs cannot be read: store nothing half-informed.
        raise WebhookRejected(500, f"settings of source {source_name!r} cannot be resolved (see the server log)")
    if delivery.partials is not None:
        try:
            records, result = store_partials(engine, source.id, delivery.partials)
        except ValueError as exc:
            raise WebhookRejected(422, str(exc)) from None
        return {
            "source": str(source.name),
            "kind": kind,
            "events": delivery.events,
            "customers": [r.external_id for r in records],
            "skipped": delivery.skipped + len(delivery.partials) - len(records),
            "created": result.created,
            "updated": result.updated,
            "unchanged": result.unchanged,
        }
    try:
        with connector_factory(kind, str(source.name), settings) as connector:
            records = receiver.delivery_records(cast(Rereader, connector), delivery)
    except SettingsError as exc:
        raise WebhookRejected(500, str(exc)) from None
    except ConnectorError as exc:
        log.error("webhook for %s: re-reading from %s failed: %s", source_name, kind, exc)
        raise WebhookRejected(502, f"could not re-read the affected customers from {kind}: {exc}") from None
    result = store_records(engine, source.id, records)
    removed = 0
    if delivery.deleted:
        with engine.begin() as conn:
            removal = remove_source_customers(conn, source.id, delivery.deleted, actor=f"webhook:{kind}")
        removed = removal.source_customers
    return {
        "source": str(source.name),
        "kind": kind,
        "events": delivery.events,
        "customers": [r.external_id for r in records],
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "deleted": removed,
    }


def _error(exc: WebhookRejected) -> JSONResponse:
    # The shape of every API error (api/errors.py): a status code and a one-line message.
    return JSONResponse({"code": exc.status, "message": exc.detail}, status_code=exc.status)


async def _receive(request: Request, source_name: str, endpoint: str, call: str = "") -> Response:
    try:
        body = await read_body_limited(request)
        factory = getattr(request.app.state, "webhook_connector_factory", None) or _default_connector
        outcome = await run_in_threadpool(
            handle_webhook,
            request.app.state.engine,
            source_name,
            dict(request.headers),
            body,
            factory,
            str(request.url),
            endpoint,
            call,
        )
    except WebhookRejected as exc:
        return _error(exc)
    return JSONResponse(outcome)


@router.post("/webhooks/{source_name}")
async def receive_webhook(source_name: str, request: Request) -> Response:
    """Receive one webhook delivery for the data source ``source_name`` (no API key: signed instead)."""
    return await _receive(request, source_name, WEBHOOK)


@router.post("/segment/{source_name}/v1/{call}")
async def receive_segment_call(source_name: str, call: str, request: Request) -> Response:
    """Segment's HTTP tracking API (``/v1/batch``, ``/v1/identify``, …), the write key as Basic user: what a
    Segment or RudderStack SDK whose host is ``https://HOST/segment/NAME`` sends."""
    return await _receive(request, source_name, SEGMENT_TRACKING, call)


@router.post("/app-store/{source_name}/notifications")
async def receive_app_store_notification(source_name: str, request: Request) -> Response:
    """An App Store Server Notification V2 (``{"signedPayload": JWS}``, signed by Apple's certificate chain)."""
    return await _receive(request, source_name, APP_STORE_NOTIFICATIONS)


@router.post("/google-play/{source_name}/rtdn")
async def receive_google_play_rtdn(source_name: str, request: Request) -> Response:
    """A Google Play real-time developer notification: a Pub/Sub push with its OIDC bearer token."""
    return await _receive(request, source_name, GOOGLE_PLAY_RTDN)


@router.get("/webhooks/{source_name}")
async def endpoint_check(source_name: str, request: Request) -> Response:
    """An integration's endpoint check (Braintree: ``GET ?bt_challenge=…`` answered with ``public_key|HMAC``)."""
    engine: Engine = request.app.state.engine

    def answer() -> str:
        with engine.connect() as conn:
            source = get_source(conn, source_name)
        receiver = receiver_of(str(source.kind)) if source is not None else None
        param = receiver.challenge_param if receiver is not None else None
        challenge = request.query_params.get(param) if param else None
        if source is None or receiver is None or not challenge:
            raise WebhookRejected(404, "no source with an endpoint check of that name, or no challenge")
        try:
            return receiver.answer_challenge(resolve_settings(source.settings or {}), challenge)
        except (WebhookPayloadError, WebhookSignatureError) as exc:
            raise WebhookRejected(422, str(exc)) from None
        except SecretResolutionError as exc:
            log.error("endpoint check for %s: source misconfigured: %s", source_name, exc)
            raise WebhookRejected(
                500, f"settings of source {source_name!r} cannot be resolved (see the server log)"
            ) from None

    try:
        return PlainTextResponse(await run_in_threadpool(answer))
    except WebhookRejected as exc:
        return _error(exc)
