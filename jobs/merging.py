"""The automatic duplicate merge that every sync and import runs after itself (docs/merging.md).

Detection and the merges are ``storage.merge.auto_merge``; this step adds the lifecycle steps survivors
reached through the merge (a lead that gains its subscriber's ``subscriber_since`` has converted), which
the runs announce.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from storage.lifecycle import LifecycleReport, collect_lifecycle_changes
from storage.merge import DEFAULT_RULES, AutoMergeResult, auto_merge


def merge_duplicates(
    engine: Engine, rules: Sequence[str] | None = None, dry_run: bool = False, *, actor: str, keep: int
) -> tuple[AutoMergeResult, LifecycleReport]:
    """Merge the duplicate groups ``rules`` find (default: email and external id), or only list them.

    Args:
        engine: the database.
        rules: any of ``email``, ``external_id``, ``domain``.
        dry_run: list the groups and the rule that matched; change nothing.
        actor: who merged, for the merge log.
        keep: the most lifecycle changes to itemise (every change is counted).

    Returns:
        The merge's result and the lifecycle changes of the survivors (none on a dry run).
    """
    result = auto_merge(engine, list(rules or DEFAULT_RULES), dry_run, actor=actor)
    changes = LifecycleReport()
    if not dry_run and result.groups:
        with engine.begin() as conn:
            survivors = [g.survivor.id for g in result.groups]
            changes = collect_lifecycle_changes(conn, survivors, keep=keep)
    return result, changes
