"""Helpers for flow tests: read back what a run published from the real Prefect test server."""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID


def run_id(state: Any) -> UUID:
    """The flow run id of a final state returned by ``flow(..., return_state=True)``."""
    return state.state_details.flow_run_id


def artifacts_of(flow_run_id: UUID) -> list[Any]:
    """Every artifact of a flow run (its tasks' included), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])),
            sort=ArtifactSort.CREATED_DESC,
        )[::-1]


def artifact(flow_run_id: UUID, type_: str, key_prefix: str = "") -> Any:
    """The newest artifact of ``type_`` (table, markdown, progress) whose key starts with the prefix."""
    found = [a for a in artifacts_of(flow_run_id) if a.type == type_ and (a.key or "").startswith(key_prefix)]
    assert found, f"no {type_} artifact with key {key_prefix!r}* in run {flow_run_id}"
    return found[-1]


def wait_events(prefix: str, resource_id: str | None = None, *, at_least: int = 1, timeout: float = 60) -> list[Any]:
    """Events whose name starts with ``prefix`` (and about ``resource_id``), once the server stored them.

    The server persists events in the background, so poll until ``at_least`` are there.
    """
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(event=EventNameFilter(prefix=[prefix]))
    if resource_id:
        flt.resource = EventResourceFilter(id=[resource_id])
    deadline = time.monotonic() + timeout
    events: list[Any] = []
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            events = list(client.read_events(filter=flt, limit=50).events)
        if len(events) >= at_least:
            return events
        time.sleep(0.5)
    return events
