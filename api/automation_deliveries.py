"""``/v1/automation_deliveries`` and ``/v1/automation_activity``: the outbox of the automations, as the
dashboard's Automations panel and ``funnelsync automations deliveries|replay`` show it.

A delivery is one action of one occurrence, named ``occ_…:N`` (``id`` in the answers). Replaying one
delivers it now, in the request, with a fresh count of attempts and the same ``Idempotency-Key``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, Request

from api.auth import require_api_key
from api.errors import Invalid, NotFound, no_nul_in_url
from automations.deployments import run_prefect_deployment
from automations.dispatch import replay
from storage.outbox import activity_by_rule, find_deliveries, list_deliveries

router = APIRouter(tags=["automations"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)])

STATUSES = ("pending", "delivered", "failed")
MAX_LIMIT = 1000


@router.get("/v1/automation_deliveries")
def list_automation_deliveries(request: Request, status: str | None = None, automation: str | None = None,
                               limit: str = "100") -> dict[str, Any]:
    """Deliveries newest first, optionally of one ``status`` and one ``automation``; at most ``limit``."""
    if status is not None and status not in STATUSES:
        raise Invalid.one("status", f"{status!r} is not a delivery status: use pending, delivered or failed")
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise Invalid.one("limit", f"{limit!r}: a whole number from 1 to {MAX_LIMIT}")
    with request.app.state.engine.connect() as conn:
        found = list_deliveries(conn, status=status, rule=automation, limit=int(limit))
    return {"entries": [d.as_dict() for d in found]}


@router.post("/v1/automation_deliveries/{ref}/replay")
def replay_automation_delivery(request: Request, ref: str) -> dict[str, Any]:
    """Deliver again now: ``occ_…:N`` one action, ``occ_…`` every action of the occurrence. Answers the
    run's counts and the deliveries as they are after it."""
    engine = request.app.state.engine
    with engine.connect() as conn:
        if not find_deliveries(conn, ref):
            raise NotFound(f"no delivery {ref!r}")
    summary = replay(engine, [ref], run_deployment=run_prefect_deployment)
    with engine.connect() as conn:
        after = find_deliveries(conn, ref)
    return {**summary.counts(), "deliveries": [d.as_dict() for d in after]}


@router.get("/v1/automation_activity")
def automation_activity(request: Request, hours: str = "24") -> dict[str, Any]:
    """Per automation, over the last ``hours``: occurrences detected, deliveries delivered and failed;
    and the deliveries pending now."""
    if not hours.isdigit() or not 1 <= int(hours) <= 24 * 366:
        raise Invalid.one("hours", f"{hours!r}: a whole number of hours from 1 to {24 * 366}")
    since = datetime.now(UTC) - timedelta(hours=int(hours))
    with request.app.state.engine.connect() as conn:
        counts = activity_by_rule(conn, since)
    entries = [{"automation": name, **row} for name, row in sorted(counts.items())]
    return {"since": since.isoformat(), "entries": entries}
