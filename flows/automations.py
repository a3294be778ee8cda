"""The ``run-automations`` flow: a thin wrapper over ``automations.dispatch.run_automations``.

Every five minutes (prefect.yaml) and at the end of the sync and import flows, so what they detected
goes out at once. Each occurrence handled emits a ``funnelsync.automation.fired`` event with the
customer as its resource; the run publishes a table artifact with one row per rule.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.artifacts import publish_stream_table
from flows.events import MAX_CUSTOMER_EVENTS, customer_resource
from flows.runtime import task_engine

EVENT = "funnelsync.automation.fired"
TABLE_COLUMNS = ("automation", "detected", "delivered", "pending", "failed")


@task(name="run-automations", retries=0)
def run_automations_task(dry_run: bool = False) -> dict[str, Any]:
    """Detect the time-based occurrences and deliver the pending ones; emit and publish what was done."""
    from prefect.events import emit_event

    from automations.deployments import run_prefect_deployment
    from automations.dispatch import run_automations

    with task_engine() as engine:
        summary = run_automations(engine, dry_run=dry_run, run_deployment=run_prefect_deployment)
    if summary.left_to:
        get_run_logger().info("another run is delivering (%s): %d pending deliveries left to it",
                              summary.left_to, summary.pending)
    for fired in summary.fired[:MAX_CUSTOMER_EVENTS]:
        emit_event(
            event=EVENT,
            resource=customer_resource(fired.customer_uuid),
            related=[{"prefect.resource.id": f"funnelsync.automation.{fired.rule}",
                      "prefect.resource.role": "automation", "prefect.resource.name": fired.rule}],
            payload={"occurrence": fired.occurrence_id, "automation": fired.rule, "trigger": fired.trigger,
                     "status": fired.status},
        )
    rows = [{"automation": name, **counts} for name, counts in sorted(summary.per_rule.items())]
    counts = summary.counts()
    publish_stream_table(
        "run-automations", rows,
        f"run-automations: {counts['detected']} detected, {counts['delivered']} delivered, "
        f"{counts['pending']} pending, {counts['failed']} failed", columns=TABLE_COLUMNS,
    )
    return counts


@flow(name="run-automations", log_prints=False)
def run_automations_flow(dry_run: bool = False) -> dict[str, Any]:
    """Run the automations: time-based triggers detected, pending deliveries delivered.

    Args:
        dry_run: detect and list only; send and store nothing.
    """
    return run_automations_task(dry_run)


def chain_automations() -> dict[str, Any] | None:
    """Run the automations after a sync or an import (the flows call it last); a failure is logged and
    does not fail the sync, whose data is committed: the next scheduled run delivers."""
    try:
        return run_automations_task()
    except Exception as exc:  # noqa: BLE001
        get_run_logger().warning("run-automations after this run failed (%s); the next scheduled run retries",
                                 type(exc).__name__)
        return None
