"""Lifecycle and merge events for Prefect automations: one per customer change, and a summary.

Everything here runs inside a flow or task run and goes to the Prefect API the run talks to. Events
carry customer fields and counts only, never a secret.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from flows.runtime import slug

# Per-customer events beyond this many in one run are summed up in one summary event instead: the first
# sync of a large source would otherwise send a million events (the server falls behind).
MAX_CUSTOMER_EVENTS = 1_000

EVENT_PREFIX = "funnelsync.customer."


def customer_resource(customer_uuid: str, name: str | None = None) -> dict[str, str]:
    """The Prefect resource of a customer (``funnelsync.customer.<uuid>``)."""
    resource = {"prefect.resource.id": f"funnelsync.customer.{customer_uuid}"}
    if name:
        resource["prefect.resource.name"] = name
    return resource


def source_related(source_uuid: str | None, source_name: str | None) -> list[dict[str, str]]:
    """The data source as a related resource of an event."""
    if not source_uuid and not source_name:
        return []
    related = {
        "prefect.resource.id": f"funnelsync.data-source.{source_uuid or slug(source_name or '')}",
        "prefect.resource.role": "data-source",
    }
    if source_name:
        related["prefect.resource.name"] = source_name
    return [related]


def emit_lifecycle_events(
    report: Any,
    *,
    source_uuid: str | None = None,
    source_name: str | None = None,
) -> dict[str, int]:
    """Emit one event per itemised lifecycle change and a summary event; return the counts by kind.

    Args:
        report: a ``storage.lifecycle.LifecycleReport`` (changes itemised up to ``MAX_CUSTOMER_EVENTS``,
            every change counted).
        source_uuid: the data source whose sync found them, as a related resource.
        source_name: its name.
    """
    from prefect.events import emit_event

    related = source_related(source_uuid, source_name)
    for change in report.changes[:MAX_CUSTOMER_EVENTS]:
        emit_event(
            event=EVENT_PREFIX + change.kind.replace("_", "-"),
            resource=customer_resource(change.customer_uuid, change.name or change.email),
            related=related,
            payload={"at": change.at.isoformat(), "email": change.email, "name": change.name},
        )
    counts = dict(report.counts)
    if counts:
        emit_event(
            event="funnelsync.lifecycle.summary",
            resource={"prefect.resource.id": "funnelsync.lifecycle"},
            related=related,
            payload={"counts": counts, "itemised": min(len(report.changes), MAX_CUSTOMER_EVENTS),
                     "at": datetime.now(UTC).isoformat()},
        )
    return counts


def emit_merge_events(merges: Iterable[Mapping[str, Any]], limit: int = MAX_CUSTOMER_EVENTS) -> int:
    """Emit ``funnelsync.customer.merged`` per merge: the survivor as resource, the merged-away as related.

    Args:
        merges: dicts with ``into`` (survivor uuid), ``from`` (merged-away uuid) and ``rule``.
        limit: most events to send.

    Returns:
        How many events were sent.
    """
    from prefect.events import emit_event

    sent = 0
    for merge in merges:
        if sent >= limit:
            break
        emit_event(
            event=EVENT_PREFIX + "merged",
            resource=customer_resource(str(merge["into"])),
            related=[
                {
                    "prefect.resource.id": f"funnelsync.customer.{merge['from']}",
                    "prefect.resource.role": "merged-away",
                }
            ],
            payload={"rule": merge.get("rule"), "from": merge["from"], "into": merge["into"]},
        )
        sent += 1
    return sent
