"""``/v1/metrics``: the funnel series and the trial cohort table over HTTP, the same numbers as the CLI.

    GET /v1/metrics/funnel?start-date=2025-01-01&end-date=2025-12-31&interval=month
        [&within-days=30][&where=country = US][&where=tag = vip]
    GET /v1/metrics/trial-cohorts?start-date=…&end-date=…&interval=month[&where=…]

Parameter names follow the commercial product's metrics API (``start-date``, ``end-date``, ``interval``);
``end-date`` is included. ``where`` (repeatable, ANDed; ``filters`` is accepted as an alias) takes the
filter grammar of ``storage.filters``. Bad input answers 400 with ``{"code", "message", "errors"}`` like every
API error.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from api.auth import require_api_key
from api.errors import ApiError, no_nul_in_url
from storage.filter_grammar import FilterError
from storage.metrics import COHORT_WINDOWS, funnel_series, trial_cohorts
from storage.periods import INTERVALS

router = APIRouter(
    prefix="/v1/metrics", tags=["metrics"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)]
)

StartDate = Annotated[
    date, Query(alias="start-date", description="First day (YYYY-MM-DD); its whole period counts.")
]
EndDate = Annotated[date, Query(alias="end-date", description="Last day (YYYY-MM-DD), included.")]
IntervalParam = Annotated[str, Query(description="day, week, month, quarter or year.")]
WhereParam = Annotated[list[str] | None, Query(description="Filter expression (repeatable, ANDed).")]


def _filters(where: list[str] | None, filters: list[str] | None) -> list[str] | None:
    combined = [*(where or []), *(filters or [])]
    return [f for f in combined if f.strip()] or None


def _compute(request: Request, interval: str, compute: Any) -> Any:
    if interval not in INTERVALS:
        raise ApiError(
            400,
            f"interval {interval!r}: use one of {', '.join(INTERVALS)}",
            [{"field": "interval", "reason": f"use one of {', '.join(INTERVALS)}"}],
        )
    try:
        with request.app.state.engine.connect() as conn:
            return compute(conn)
    except FilterError as exc:
        raise ApiError(400, f"where: {exc}", [{"field": "where", "reason": str(exc)}]) from None
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None


@router.get("/funnel")
def funnel(
    request: Request,
    start: StartDate,
    end: EndDate,
    interval: IntervalParam = "month",
    within_days: Annotated[int | None, Query(alias="within-days", ge=0, le=36600)] = None,
    where: WhereParam = None,
    filters: WhereParam = None,
) -> dict[str, Any]:
    """Leads, free trials, trial-to-paid rate, new subscribers and sales cycle per period."""
    clauses = _filters(where, filters)
    series = _compute(
        request, interval, lambda conn: funnel_series(conn, start, end, interval, within_days, clauses)
    )
    return {"interval": interval, "start": start.isoformat(), "end": end.isoformat(), "series": series}


@router.get("/trial-cohorts")
def cohorts(
    request: Request,
    start: StartDate,
    end: EndDate,
    interval: IntervalParam = "month",
    where: WhereParam = None,
    filters: WhereParam = None,
) -> dict[str, Any]:
    """Trial cohorts per period with the share converted within 7, 14, 30, 60 and 90 days."""
    clauses = _filters(where, filters)
    rows = _compute(request, interval, lambda conn: trial_cohorts(conn, start, end, interval, clauses))
    return {
        "interval": interval,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "windows": list(COHORT_WINDOWS),
        "cohorts": rows,
    }
