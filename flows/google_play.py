"""``google-play-reports``: pull every Google Play source's monthly sales reports from its Cloud Storage
bucket (``jobs.google_play_bucket``), one task per source under the source's lock, then merge duplicates."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from flows.merge import merge_duplicates_task
from flows.runtime import (
    TASK_RETRIES,
    TASK_RETRY_DELAYS,
    TASK_RETRY_JITTER,
    one_line,
    retry_if_transient,
    run_owner,
    task_engine,
)
from storage.merge_plan import DEFAULT_RULES


@task(
    name="google-play-reports",
    task_run_name="google play reports {source}",
    retries=TASK_RETRIES,
    retry_delay_seconds=TASK_RETRY_DELAYS,
    retry_jitter_factor=TASK_RETRY_JITTER,
    retry_condition_fn=retry_if_transient,
)
def pull_reports_task(source: str, lock_wait_seconds: float = 0.0) -> dict[str, Any]:
    """Read the months due from one source's bucket; ``status: skipped`` when it is already being read."""
    from jobs.google_play_bucket import pull_sales_reports
    from storage.locks import LockBusy, hold_lock
    from storage.sources import require_source

    with task_engine() as engine:
        with engine.connect() as conn:
            row = require_source(conn, source)
        try:
            with hold_lock(engine, f"sync:{row.uuid}", run_owner(), wait_seconds=lock_wait_seconds):
                summary = pull_sales_reports(engine, str(row.name))
        except LockBusy as busy:
            message = f"reports of {row.name} skipped: they are already being read ({busy})"
            get_run_logger().warning(message)
            return {"source": str(row.name), "status": "skipped", "message": message}
    summary["status"] = "completed"
    return summary


@flow(name="google-play-reports", log_prints=False)
def google_play_reports_flow(
    merge_after: bool = True, merge_rules: list[str] | None = None, lock_wait_seconds: float = 0.0
) -> dict[str, Any]:
    """Pull the sales reports of every enabled google_play source with a bucket, then merge duplicates.

    A failing source does not stop the others; the run fails at the end naming each failed source.
    """
    from jobs.google_play_bucket import bucket_sources

    with task_engine() as engine, engine.connect() as conn:
        names = bucket_sources(conn)
    if not names:
        get_run_logger().warning("No google_play source with a bucket: set one with --set bucket=pubsite_prod_rev_…")
        return {"sources": [], "failed": []}
    summaries: list[dict[str, Any]] = []
    failed: list[str] = []
    for name in names:
        try:
            summaries.append(pull_reports_task(name, lock_wait_seconds))
        except Exception as exc:  # noqa: BLE001 - one source's failure must not hide the others'
            failed.append(f"{name} ({one_line(exc)})")
    if merge_after and summaries:
        merge_duplicates_task(merge_rules or list(DEFAULT_RULES), False)
    if failed:
        raise RuntimeError(f"google play reports failed for {len(failed)} source(s): {', '.join(failed)}")
    return {"sources": summaries, "failed": failed}
