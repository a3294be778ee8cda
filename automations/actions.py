"""The actions: one attempt at one delivery.

``perform`` returns when the action was done, raises ``Retry`` when another attempt may succeed (a
network error, any answer but 2xx and 410) and ``Failed`` when none will (410, a secret that cannot be
resolved, an edit the edit rules refuse). Messages never hold a secret: the resolved values are
scrubbed from them, and a Slack URL (itself the credential) is never part of one.

The webhook's wire format::

    POST url
    Content-Type: application/json
    Idempotency-Key: <occurrence id>          (the same on every retry and replay)
    X-Funnelsync-Timestamp: <unix seconds>
    X-Funnelsync-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<raw body>" keyed by the secret>

    {"id": …, "automation": …, "trigger": …, "occurred_at": …, "customer": {…}}
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import Engine

from automations.rules import is_reference
from automations.templates import render, render_value, slack_escape
from jobs.secrets import SecretResolutionError, resolve_value

SIGNATURE_HEADER = "X-Funnelsync-Signature"
TIMESTAMP_HEADER = "X-Funnelsync-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


class Retry(Exception):
    """This attempt failed; a later one may succeed."""


class Failed(Exception):
    """This delivery cannot succeed: it is failed at once."""


@dataclass(frozen=True, slots=True)
class Job:
    """What one delivery does: its action (as stored) and the message it is about."""

    occurrence_id: str
    rule: str
    trigger: str
    occurred_at: str
    action: Mapping[str, Any]
    customer: Mapping[str, Any]

    def payload(self) -> dict[str, Any]:
        return {"id": self.occurrence_id, "automation": self.rule, "trigger": self.trigger,
                "occurred_at": self.occurred_at, "customer": {k: v for k, v in self.customer.items() if k != "id"}}


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header's value for a body sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[secret]")
    return text


def _resolve(setting: str, value: Any) -> str:
    try:
        return str(resolve_value(setting, value))
    except SecretResolutionError as exc:
        raise Failed(str(exc)) from None


def _post(client: httpx.Client, url: str, body: bytes, headers: dict[str, str], secrets: list[str],
          hidden_as: str | None) -> None:
    where = hidden_as or url
    try:
        response = client.post(url, content=body, headers={"Content-Type": "application/json", **headers})
    except httpx.HTTPError as exc:
        raise Retry(_scrub(f"{type(exc).__name__} posting to {where}: {exc}", secrets)) from None
    if 200 <= response.status_code < 300:
        return
    detail = _scrub(response.text[:200].strip(), secrets)
    message = f"{where} answered HTTP {response.status_code}" + (f": {detail}" if detail else "")
    if response.status_code == 410:
        raise Failed(message + " (410 Gone: not retried)")
    raise Retry(message)


@dataclass
class Performer:
    """Performs attempts with one shared HTTP client; ``run_deployment`` and ``edit`` are its doors to
    Prefect and to the edit job (injected so this module needs neither)."""

    client: httpx.Client
    engine: Engine | None = None
    run_deployment: Callable[[str, dict[str, Any], str], str] | None = None
    clock: Callable[[], float] = time.time

    def perform(self, job: Job) -> str:
        """One attempt; returns a short note of what was done."""
        kind = job.action["kind"]
        return getattr(self, f"_{kind}")(job)

    def _webhook(self, job: Job) -> str:
        url = _resolve("webhook url", job.action["url"])
        secret = _resolve("webhook secret", job.action["secret"])
        body = json.dumps(job.payload(), separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")
        timestamp = int(self.clock())
        headers = {
            IDEMPOTENCY_HEADER: job.occurrence_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        # A URL given as a secret reference is itself a secret (a token in it): never in a message.
        hidden = is_reference(job.action["url"])
        _post(self.client, url, body, headers, [secret, url] if hidden else [secret],
              "the webhook's URL (from a secret)" if hidden else None)
        return "posted"

    def _slack(self, job: Job) -> str:
        url = _resolve("slack url", job.action["url"])
        text = render(job.action["text"], job.customer, slack_escape)
        body = json.dumps({"text": text}, ensure_ascii=False).encode("utf-8")
        _post(self.client, url, body, {IDEMPOTENCY_HEADER: job.occurrence_id}, [url], "the Slack webhook")
        return "posted"

    def _set(self, job: Job) -> str:
        from jobs.edits import EditValueError, edit_customer

        if self.engine is None:
            raise Failed("set needs the database")
        edits: dict[str, Any] = {}
        for field, value in job.action["fields"].items():
            value = render_value(value, job.customer) if isinstance(value, str) else value
            if field == "tag":
                edits.update({f"tag.{tag}": True for tag in value})
            else:
                edits[field] = value
        try:
            edit_customer(self.engine, int(job.customer["id"]), edits, actor=f"automation:{job.rule}")
        except EditValueError as exc:
            raise Failed(f"the edit is refused: {exc}") from None
        return "set " + ", ".join(sorted(edits))

    def _run_deployment(self, job: Job) -> str:
        if self.run_deployment is None:
            raise Retry("no Prefect API to run deployments with (set PREFECT_API_URL)")
        parameters = render_value(dict(job.action.get("parameters") or {}), job.customer)
        try:
            run_id = self.run_deployment(job.action["name"], parameters, job.occurrence_id)
        except Exception as exc:  # noqa: BLE001  a missing deployment, an unreachable API: tried again
            raise Retry(f"running deployment {job.action['name']}: {type(exc).__name__}: {exc}") from None
        return f"flow run {run_id}"

    def _merge(self, job: Job) -> str:
        raise Failed("merge actions are carried out by the duplicate search, not delivered")
