"""``automations run``: detect the time-based occurrences, then deliver what is pending.

Dispatch reads due pending deliveries a batch at a time and performs them concurrently (a thread pool
over one shared HTTP client). In one run a delivery is tried up to ``RETRY_DELAYS`` + 1 times (1 s, then
2 s apart, tenacity's waits); if it still fails it stays pending with a ``next_attempt_at`` that grows
with its attempts (up to an hour) and becomes ``failed`` after its ``max_attempts``, keeping its last
error. A 410 fails it at once. Outcomes are written after the batch is performed: a crash in between
delivers those again, with the same ``Idempotency-Key``, which is how a receiver drops the repeat.

One run delivers at a time, on any number of workers: delivering holds the database lock
``automations:dispatch`` (storage/locks.py). A run that finds it held (the scheduled run and one chained
after a sync overlapping) detects, then leaves the delivering to the holder, which reads due deliveries
until none is left; its own are counted pending. A holder that was killed on this machine is taken over
at once, one elsewhere when its lock lapses.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, Engine
from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_attempt, wait_chain, wait_fixed

from automations.actions import Failed, Job, Performer, Retry
from storage.automation_rules import TIME_TRIGGERS, list_rules
from storage.customers import customer_view, merged_into, text_never_null
from storage.locks import LockBusy, hold_lock
from storage.outbox import (
    Delivery,
    count_due,
    customer_ids_by_uuid,
    detect_time_triggers,
    due_deliveries,
    find_deliveries,
    list_deliveries,
    manual_edits_by_customer,
    record_attempts,
    reset_for_replay,
    retry_delay,
)

RETRY_DELAYS: tuple[float, ...] = (1.0, 2.0)
BATCH = 1000
CONCURRENCY = 32
TIMEOUT = httpx.Timeout(10.0)
DEFAULT_MAX_ATTEMPTS = 8
DISPATCH_LOCK = "automations:dispatch"
# A replayed delivery is not due for the runs while the replay sends it (the replay picks it by id);
# if the replay dies, a run sends it after this.
REPLAY_LEASE = timedelta(hours=1)


@dataclass
class Fired:
    """One occurrence handled by this run (for the Prefect event and the artifact)."""

    occurrence_id: str
    rule: str
    trigger: str
    customer_uuid: str
    status: str


@dataclass
class RunSummary:
    """What a run did: ``detected`` new time-based occurrences, deliveries by outcome, per rule."""

    detected: int = 0
    delivered: int = 0
    pending: int = 0
    failed: int = 0
    per_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    fired: list[Fired] = field(default_factory=list)
    would_deliver: list[dict[str, Any]] = field(default_factory=list)
    # Set when another run was delivering: who (its pending deliveries are left to it).
    left_to: str | None = None

    def counts(self) -> dict[str, int]:
        return {"detected": self.detected, "delivered": self.delivered, "pending": self.pending,
                "failed": self.failed}

    def _count(self, rule: str, what: str) -> None:
        row = self.per_rule.setdefault(rule, {"detected": 0, "delivered": 0, "pending": 0, "failed": 0})
        row[what] += 1

    def add(self, status: str, rule: str) -> None:
        """Count one delivery's outcome."""
        setattr(self, status, getattr(self, status) + 1)
        self._count(rule, status)


def run_automations(
    engine: Engine,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    retry_delays: Sequence[float] = RETRY_DELAYS,
    concurrency: int = CONCURRENCY,
    run_deployment: Callable[[str, dict[str, Any], str], str] | None = None,
    client: httpx.Client | None = None,
    progress: Callable[[RunSummary, int], None] | None = None,
) -> RunSummary:
    """Detect the time-based occurrences and deliver every due delivery; with ``dry_run`` send nothing,
    store nothing, and list what would be delivered.

    ``progress`` (a display) is called with the summary so far and how many deliveries were due when
    delivering began: once after detection, then after each batch.
    """
    now = now or datetime.now(UTC)
    summary = RunSummary()
    with engine.connect() as conn:
        transaction = conn.begin()
        try:
            detected = detect_time_triggers(conn, list_rules(conn, TIME_TRIGGERS), now)
            if dry_run:
                summary.would_deliver = [d.as_dict() for d in due_deliveries(conn, now, limit=100_000)]
                summary.pending = len(summary.would_deliver)
        finally:
            (transaction.rollback if dry_run else transaction.commit)()
    summary.detected = sum(detected.values())
    for name, count in detected.items():
        summary._count(name, "detected")
        summary.per_rule[name]["detected"] = count
    if dry_run:
        return summary
    try:
        with hold_lock(engine, DISPATCH_LOCK, _owner()):
            report: Callable[[], None] | None = None
            if progress is not None:
                with engine.connect() as conn:
                    due = count_due(conn, now)
                report = lambda: progress(summary, due)
                report()
            deliver(engine, lambda conn: due_deliveries(conn, now, BATCH), summary, retry_delays=retry_delays,
                    concurrency=concurrency, run_deployment=run_deployment, client=client, after_batch=report)
    except LockBusy as busy:
        summary.left_to = busy.holder.owner if busy.holder is not None else "another run"
        with engine.connect() as conn:
            summary.pending = count_due(conn, now)
    return summary


def _owner() -> str:
    # The thread too: two runs in one process (a worker serving several flows) are two holders.
    return f"PID {os.getpid()} on {socket.gethostname()} (automations run, thread {threading.get_ident()})"


def replay(
    engine: Engine,
    refs: Sequence[str] = (),
    *,
    failed: bool = False,
    retry_delays: Sequence[float] = RETRY_DELAYS,
    concurrency: int = CONCURRENCY,
    run_deployment: Callable[[str, dict[str, Any], str], str] | None = None,
    client: httpx.Client | None = None,
) -> RunSummary:
    """Deliver again the deliveries named (``occ_…`` or ``occ_…:N``) or, with ``failed``, every failed one,
    with a fresh count of attempts. Raises ``LookupError`` for a reference that names none."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        chosen: list[Delivery] = []
        for ref in refs:
            found = find_deliveries(conn, ref)
            if not found:
                raise LookupError(f"no delivery {ref!r} (see funnelsync automations deliveries)")
            chosen.extend(found)
        if failed:
            chosen.extend(list_deliveries(conn, status="failed"))
        reset_for_replay(conn, chosen, now + REPLAY_LEASE)
    keys = [(d.occurrence_id, d.action_index) for d in chosen]
    summary = RunSummary()
    batches = iter([keys[i : i + BATCH] for i in range(0, len(keys), BATCH)])

    def next_batch(conn: Connection) -> list[Delivery]:
        part = next(batches, None)
        if part is None:
            return []
        return [d for occ, index in part for d in find_deliveries(conn, f"{occ}:{index}")]

    deliver(engine, next_batch, summary, retry_delays=retry_delays, concurrency=concurrency,
            run_deployment=run_deployment, client=client)
    return summary


def deliver(
    engine: Engine,
    next_batch: Callable[[Connection], list[Delivery]],
    summary: RunSummary,
    *,
    retry_delays: Sequence[float],
    concurrency: int,
    run_deployment: Callable[[str, dict[str, Any], str], str] | None,
    client: httpx.Client | None,
    after_batch: Callable[[], None] | None = None,
) -> None:
    """Perform batches until ``next_batch`` gives none, writing each batch's outcomes."""
    own_client = client is None
    http = client or httpx.Client(timeout=TIMEOUT, limits=httpx.Limits(max_connections=concurrency,
                                                                       max_keepalive_connections=concurrency))
    performer = Performer(http, engine=engine, run_deployment=run_deployment)
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            while True:
                with engine.connect() as conn:
                    batch = next_batch(conn)
                    if not batch:
                        return
                    jobs = _jobs(conn, batch)
                outcomes = list(pool.map(lambda pair: _attempt(performer, pair[0], pair[1], retry_delays),
                                         zip(batch, jobs)))
                finished = datetime.now(UTC)
                rows = []
                for delivery, (status, attempts, error) in zip(batch, outcomes):
                    next_at = finished + retry_delay(attempts) if status == "pending" else finished
                    rows.append((delivery, status, attempts, error, next_at))
                    summary.add(status, delivery.rule_name)
                    if delivery.attempts == 0:
                        summary.fired.append(Fired(delivery.occurrence_id, delivery.rule_name, delivery.trigger,
                                                   delivery.customer_uuid, status))
                with engine.begin() as conn:
                    record_attempts(conn, rows, finished)
                if after_batch is not None:
                    after_batch()
    finally:
        if own_client:
            http.close()


def _jobs(conn: Connection, batch: list[Delivery]) -> list[Job | str]:
    """Each delivery's job, or why it has none (its rule was removed, its customer is gone)."""
    rules = {rule.name: rule for rule in list_rules(conn)}
    uuids = {d.customer_uuid for d in batch}
    ids = customer_ids_by_uuid(conn, list(uuids))
    for uuid in uuids - set(ids):
        # Merged away since: the message is about the survivor.
        survivor = merged_into(conn, uuid)
        if survivor is not None:
            found = customer_ids_by_uuid(conn, [survivor])
            if survivor in found:
                ids[uuid] = found[survivor]
    wanted = sorted(set(ids.values()))
    edits = manual_edits_by_customer(conn, wanted)
    # The customer as ``funnelsync customers show --json`` prints it (the internal id kept for ``set``).
    views = {view["id"]: {**text_never_null(view), "manual_edits": edits.get(view["id"], {})}
             for view in customer_view(conn, wanted)}
    jobs: list[Job | str] = []
    for d in batch:
        rule = rules.get(d.rule_name)
        if rule is None or d.action_index >= len(rule.actions):
            jobs.append(f"the automation {d.rule_name!r} (or this action of it) was removed")
            continue
        view = views.get(ids.get(d.customer_uuid, -1))
        if view is None:
            jobs.append(f"customer {d.customer_uuid} no longer exists")
            continue
        jobs.append(Job(d.occurrence_id, d.rule_name, d.trigger, d.occurred_at.isoformat(),
                        rule.actions[d.action_index], view))
    return jobs


def _attempt(performer: Performer, delivery: Delivery, job: Job | str,
             retry_delays: Sequence[float]) -> tuple[str, int, str | None]:
    """(status, attempts, last error) after this run's tries of one delivery."""
    if isinstance(job, str):
        return "failed", delivery.attempts, job
    max_attempts = int(job.action.get("max_attempts") or DEFAULT_MAX_ATTEMPTS)
    tries = max(1, min(len(retry_delays) + 1, max_attempts - delivery.attempts))
    made = 0

    def once() -> str:
        nonlocal made
        made += 1
        return performer.perform(job)

    try:
        Retrying(
            stop=stop_after_attempt(tries),
            wait=wait_chain(*(wait_fixed(s) for s in retry_delays)) if retry_delays else wait_fixed(0),
            retry=retry_if_exception_type(Retry),
            reraise=True,
        )(once)
    except Failed as exc:
        return "failed", delivery.attempts + made, str(exc)
    except (Retry, RetryError) as exc:
        attempts = delivery.attempts + made
        return ("failed" if attempts >= max_attempts else "pending"), attempts, str(exc)
    except Exception as exc:  # noqa: BLE001  a bug in one action must not lose the batch's outcomes
        return "pending", delivery.attempts + made, f"{type(exc).__name__}: {exc}"
    return "delivered", delivery.attempts + made, None
