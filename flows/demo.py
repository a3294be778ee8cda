"""The demo: real flows, end to end, on whatever database funnelsync is configured with.

Starts local stand-ins of Stripe and Chargebee on 127.0.0.1 (``fakes.demo``), whose customers are
partly the converted leads of the bundled ``samples/leads.csv``; then, through the Prefect flows:
imports the CSV (``import-file``), syncs both integrations (``sync-source``), merges the duplicates the
conversions created (``merge-duplicates``), publishes the metrics artifact (``refresh-metrics``) and
returns the monthly funnel for printing. Running it again changes nothing (every step is idempotent).
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from fakes.base import FakePerson
from fakes.demo import DAY, FakeVendorServer, customer, population, subscribe

SAMPLE_CSV = Path(__file__).resolve().parent.parent / "samples" / "leads.csv"
LEADS_SOURCE = "Website leads"
STRIPE_SOURCE = "stripe-demo"
CHARGEBEE_SOURCE = "chargebee-demo"
# The demo sources keep only references to these variables; the values live in this process.
STRIPE_KEY_ENV = "FUNNELSYNC_DEMO_STRIPE_KEY"
CHARGEBEE_KEY_ENV = "FUNNELSYNC_DEMO_CHARGEBEE_KEY"


@dataclass
class DemoResult:
    """What the demo did, for the command to print."""

    steps: list[tuple[str, str]] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)
    customers: int = 0
    merged: int = 0


def _parse(text: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    return int(datetime.strptime(text[:16], "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp())


DATE_COLUMNS = ("Signup Date", "Trial Start")


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    last_day = (date(year + (month == 12), month % 12 + 1, 1) - date(year, month, 1)).days
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))


def dated_sample(csv_path: Path, out_dir: Path, today: date) -> Path:
    """A copy of ``csv_path`` whose dates are moved by whole months so its last month is the one before ``today``'s.

    The bundled leads span ten months; moved this way they fall in the last twelve, which is what the
    dashboard and ``funnelsync metrics`` open on. Whole months keep each month's figures as they are,
    and the copy is the same for every run in the same month (a re-run changes nothing).
    """
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        fields = list(reader.fieldnames or [])
        rows = list(reader)
    stamps = [datetime.strptime(row[c][:16], "%Y-%m-%d %H:%M") for row in rows for c in DATE_COLUMNS
              if (row.get(c) or "").strip()]
    last = max(stamps)
    shift = (today.year * 12 + today.month - 1) - (last.year * 12 + last.month)
    for row in rows:
        for column in DATE_COLUMNS:
            text = (row.get(column) or "").strip()
            if text:
                row[column] = _add_months(datetime.strptime(text[:16], "%Y-%m-%d %H:%M"), shift).strftime(
                    "%Y-%m-%d %H:%M")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / csv_path.name
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return out


def vendor_people(csv_path: Path, today: date | None = None) -> tuple[list[FakePerson], list[FakePerson], int]:
    """Stripe and Chargebee customers for the demo, and the moment the demo calls "now".

    Every third lead of the CSV that took a trial converted in Stripe (same person, e-mail in other
    case: the merge finds them), the rest of both vendors' customers are their own, created over the
    CSV's months so the funnel has figures every month. "Now" is a month after the CSV's last date, or
    midnight of ``today`` if that comes first.
    """
    with csv_path.open(encoding="utf-8-sig", newline="") as handle:
        leads = list(csv.DictReader(handle))
    stamps = [s for row in leads for s in (_parse(row.get("Signup Date", "")), _parse(row.get("Trial Start", ""))) if s]
    now = max(stamps) + 30 * DAY
    if today is not None:  # never in the future: midnight of today at the latest (the same all day long)
        now = min(now, int(datetime(today.year, today.month, today.day, tzinfo=UTC).timestamp()))
    span_days = max(30, (now - min(stamps)) // DAY)
    converted: list[FakePerson] = []
    trials = [row for row in leads if _parse(row.get("Trial Start", ""))]
    for i, row in enumerate(trials[::3]):
        trial = _parse(row["Trial Start"]) or 0
        first, _, last = row.get("Full Name", "").partition(" ")
        person = customer(f"cus_lead{i:03d}", row["E-mail"].upper(), first, last, row.get("Company", ""),
                          row.get("Country", "US"), trial)
        if trial + 14 * DAY <= now:
            subscribe(person, f"sub_lead{i:03d}", "active", trial, trial, trial + 14 * DAY,
                      first_paid_at=trial + 14 * DAY)
        else:  # the trial is not over yet "now": it converts later
            subscribe(person, f"sub_lead{i:03d}", "trialing", trial, trial, trial + 14 * DAY)
        converted.append(person)
    stripe = converted + population(24, seed=7, now=now, days=span_days)
    chargebee = population(16, seed=8, prefix="cb_", now=now, days=span_days)
    return stripe, chargebee, now


def _upsert_source(engine: Any, name: str, kind: str, settings: dict[str, Any]) -> None:
    from storage.sources import create_source, get_source, update_source_settings

    with engine.begin() as conn:
        row = get_source(conn, name)
        if row is None:
            create_source(conn, name, kind, settings)
        else:  # a re-run: the stand-in listens on a new port
            update_source_settings(conn, row.id, settings)


def run_demo(csv_path: Path = SAMPLE_CSV, say: Callable[[str], None] = print) -> DemoResult:
    """Run the demo through the Prefect flows; see the module docstring.

    Args:
        csv_path: the leads CSV to import.
        say: where progress lines go.
    """
    from sqlalchemy import func, select

    from flows.imports import import_file_flow
    from flows.metrics import refresh_metrics_flow
    from flows.sync import sync_source_flow
    from storage.db import funnelsync_home, make_engine, upgrade
    from storage.metrics import funnel_series
    from storage.schema import customers, merge_events

    result = DemoResult()
    engine = make_engine()
    upgrade(engine)
    today = datetime.now(UTC).date()
    if csv_path.resolve() == SAMPLE_CSV.resolve():
        csv_path = dated_sample(csv_path, funnelsync_home() / "demo", today)
    stripe_people, chargebee_people, now = vendor_people(csv_path, today)
    with FakeVendorServer(stripe_people, chargebee_people) as vendors:
        say(f"Local Stripe and Chargebee stand-ins listening on {vendors.url}")
        os.environ[STRIPE_KEY_ENV] = vendors.stripe_settings()["api_key"]
        os.environ[CHARGEBEE_KEY_ENV] = vendors.chargebee_settings()["api_key"]
        _upsert_source(
            engine, STRIPE_SOURCE, "stripe", {**vendors.stripe_settings(), "api_key": f"env:{STRIPE_KEY_ENV}"}
        )
        _upsert_source(
            engine,
            CHARGEBEE_SOURCE,
            "chargebee",
            {**vendors.chargebee_settings(), "api_key": f"env:{CHARGEBEE_KEY_ENV}"},
        )

        def step(label: str, run: Callable[[], Any], describe: Callable[[Any], str]) -> Any:
            clock = time.monotonic()
            state = run()
            if not state.is_completed():
                raise RuntimeError(f"{label} failed: {state.message}")
            value = state.result()
            line = f"{describe(value)} ({time.monotonic() - clock:.1f}s)"
            result.steps.append((label, line))
            say(f"{label}: {line}")
            return value

        step(
            "import-file",
            lambda: import_file_flow(str(csv_path), LEADS_SOURCE, mapping=["Plan=custom.plan"], merge_after=False,
                                     return_state=True),
            lambda s: f"{csv_path.name} into {LEADS_SOURCE!r}: {s['created']} created, {s['updated']} updated, "
            f"{s['unchanged']} unchanged, {s['rejected']} rejected",
        )
        for name, merge_after in ((STRIPE_SOURCE, False), (CHARGEBEE_SOURCE, True)):
            summary = step(
                "sync-source",
                lambda name=name, merge_after=merge_after: sync_source_flow(  # type: ignore[misc]
                    name, merge_after=merge_after, return_state=True
                ),
                lambda s: f"{s['source']}: {s['totals']['fetched']} fetched, {s['totals']['created']} created, "
                f"{s['totals']['updated']} updated, {s['totals']['unchanged']} unchanged",
            )
        merge = summary.get("merge") or {}
        result.steps.append(("merge-duplicates", f"{merge.get('merged_customers', 0)} customers merged"))
        say(
            f"merge-duplicates (after the sync): {merge.get('group_count', 0)} duplicate groups by "
            f"{', '.join(merge.get('rules', []))}, {merge.get('merged_customers', 0)} customers merged into their "
            "survivors"
        )
    last_month = datetime.fromtimestamp(now, UTC).date().replace(day=1)
    step("refresh-metrics", lambda: refresh_metrics_flow(f"{last_month:%Y-%m}", return_state=True),
         lambda s: "funnel-metrics artifact published")
    with engine.connect() as conn:
        first = conn.execute(select(func.min(customers.c.lead_created_at))).scalar_one()
        result.customers = conn.execute(select(func.count()).select_from(customers)).scalar_one()
        result.merged = conn.execute(select(func.count()).select_from(merge_events)).scalar_one()
        start = (first.date() if first else last_month).replace(day=1)
        result.series = funnel_series(conn, start, max(last_month, date(start.year, start.month, 1)), "month")
    engine.dispose()
    return result
