"""The ``merge-duplicates`` flow and the merge task every sync and import runs after itself.

Detection is one GROUP BY per rule (``storage.merge``), so the task is coarse by nature: one task for
the whole database. It publishes a table artifact of the groups (the dry-run report) and emits a
``funnelsync.customer.merged`` event per merge, plus the lifecycle steps survivors reached through the
merge (a lead that gains its subscriber's ``subscriber_since`` has converted).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.artifacts import publish_stream_table
from flows.events import MAX_CUSTOMER_EVENTS, emit_lifecycle_events, emit_merge_events
from flows.runtime import TASK_RETRIES, TASK_RETRY_DELAYS, TASK_RETRY_JITTER, retry_if_transient, task_engine
from jobs.merging import merge_duplicates

# Rows of the groups table artifact: enough to review a dry run in the UI without flooding it.
MAX_ARTIFACT_GROUPS = 500


@task(
    name="merge-duplicates",
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS,
    retry_jitter_factor=TASK_RETRY_JITTER,
    retry_condition_fn=retry_if_transient,
)
def merge_duplicates_task(rules: list[str] | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Find duplicate groups by ``rules`` and merge each into its survivor (or only list them).

    Args:
        rules: any of ``email``, ``external_id``, ``domain`` (default: email and external_id).
        dry_run: list the groups and the rule that matched; change nothing.

    Returns:
        ``{"dry_run", "rules", "group_count", "merged_customers", "skipped", "groups": [...]}``
        (groups cut to the first 500).
    """
    logger = get_run_logger()
    with task_engine() as engine:
        result, changes = merge_duplicates(
            engine, rules, dry_run, actor="prefect:merge-duplicates", keep=MAX_CUSTOMER_EVENTS
        )
    groups = [g.as_json() for g in result.groups]
    publish_stream_table(
        "merge-duplicates",
        [
            {"survivor": g["survivor"], "merged": ", ".join(g["merged"]), "rule": g["rule"],
             "keys": "; ".join(f"{k}: {', '.join(v)}" for k, v in g["keys"].items())}
            for g in groups[:MAX_ARTIFACT_GROUPS]
        ],
        (
            f"{'Dry run: ' if dry_run else ''}{len(groups)} duplicate groups by {', '.join(result.rules)}; "
            f"{result.merged_customers} customers merged"
            + (f", {result.skipped} skipped (changed meanwhile)" if result.skipped else "")
        ),
        columns=("survivor", "merged", "rule", "keys"),
    )
    if not dry_run:
        emit_merge_events({"into": g["survivor"], "from": m, "rule": g["rule"]} for g in groups for m in g["merged"])
        emit_lifecycle_events(changes)
    logger.info(
        "%s %d duplicate groups (rules: %s); merged %d customers",
        "Found" if dry_run else "Merged",
        len(groups),
        ", ".join(result.rules),
        result.merged_customers,
    )
    summary = result.as_json()
    summary["groups"] = summary["groups"][:MAX_ARTIFACT_GROUPS]
    return summary


@flow(name="merge-duplicates", log_prints=False)
def merge_duplicates_flow(dry_run: bool = False, rules: list[str] | None = None) -> dict[str, Any]:
    """Merge duplicate customers (docs/merging.md): by email and external id by default, by domain on request.

    Args:
        dry_run: list the groups and the rule that matched; change nothing.
        rules: any of ``email``, ``external_id``, ``domain``.
    """
    return merge_duplicates_task(rules, dry_run)
