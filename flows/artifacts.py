"""How runs report in the Prefect UI: progress and table artifacts.

Everything here runs inside a flow or task run and goes to the Prefect API the run talks to. Artifacts
carry counts and names only, never a secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from flows.runtime import slug

STREAM_COLUMNS = ("stream", "fetched", "created", "updated", "unchanged", "rejected", "duration_s")


class ProgressReporter:
    """A progress artifact for one run, moved forward as batches arrive.

    Progress is the share of work units done (streams of a source, sources of sync-all, chunks of a
    file); within a unit whose size is unknown (an API that does not say how many pages remain) the
    artifact's description carries the running count instead.
    """

    def __init__(self, key: str, units: int, what: str) -> None:
        from prefect.artifacts import create_progress_artifact

        self.units = max(units, 1)
        self.done = 0.0
        self.what = what
        self.artifact_id: UUID | None = None
        try:
            self.artifact_id = create_progress_artifact(  # type: ignore[assignment]  # a UUID in a sync run
                0.0, key=slug(key), description=f"{what}: starting"
            )
        except Exception:  # noqa: BLE001 - reporting must never fail the sync itself
            self.artifact_id = None

    def update(self, done_units: float, description: str) -> None:
        """Move to ``done_units`` of ``units`` with a one-line description of where the run is."""
        from prefect.artifacts import update_progress_artifact

        self.done = min(max(done_units, self.done), self.units)
        if self.artifact_id is None:
            return
        try:
            update_progress_artifact(
                self.artifact_id, round(100.0 * self.done / self.units, 1), description=f"{self.what}: {description}"
            )
        except Exception:  # noqa: BLE001,S110
            pass

    def finish(self, description: str) -> None:
        """Mark the run complete."""
        self.update(self.units, description)


def publish_stream_table(
    key: str, rows: Sequence[Mapping[str, Any]], description: str, columns: Sequence[str] = STREAM_COLUMNS
) -> None:
    """A table artifact with one row per stream (or file, or source) and its counts."""
    from prefect.artifacts import create_table_artifact

    table = [{col: row.get(col) for col in columns} for row in rows]
    create_table_artifact(table=table, key=slug(key), description=description)
