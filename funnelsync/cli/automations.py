"""``funnelsync automations validate|apply|list``: rules that fire downstream work on lead and trial events."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table

from funnelsync.cli import common
from funnelsync.cli.common import app, compact_table, console, get_engine, print_json

automations_app = typer.Typer(help="Automated workflows: rules, their deliveries, their runs.", no_args_is_help=True)
app.add_typer(automations_app, name="automations")

RuleFile = Annotated[Path, typer.Argument(help="A YAML rule file (automations: a list of rules).")]


def _refuse(lines: list[str]) -> NoReturn:
    # Every error on its own FILE:LINE line (an editor jumps to each), not the one-line summary.
    for line in lines:
        print(f"error: {line}", file=sys.stderr)
    raise typer.Exit(2)


def _read(path: Path) -> list[dict[str, Any]]:
    from automations.rule_file import RuleFileError, read_rule_file

    try:
        return read_rule_file(path)
    except RuleFileError as exc:
        _refuse([str(e) for e in exc.errors])


@automations_app.command("validate")
def automations_validate(path: RuleFile) -> None:
    """Check a rule file and store nothing: every error as FILE:LINE: reason, exit 2."""
    definitions = _read(path)
    console.print(f"{path}: {len(definitions)} rule{'s' if len(definitions) != 1 else ''}, valid.")


@automations_app.command("apply")
def automations_apply(
    path: RuleFile,
    prune: Annotated[bool, typer.Option("--prune", help="Also remove the stored rules the file lacks.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Validate a rule file and store its rules (all or, on any error, none: exit 2)."""
    from automations.apply import apply_rules
    from automations.rule_file import locate
    from automations.rules import RuleValidationError

    definitions = _read(path)
    try:
        result = apply_rules(get_engine(), definitions, prune=prune)
    except RuleValidationError as exc:
        # Errors only the database can tell (a data source a condition names), at their lines.
        _refuse([str(e) for e in locate(path, exc.errors)])
    if as_json:
        print_json(result.as_dict())
        return
    o = result.outcome
    console.print(f"{len(o.created)} created, {len(o.updated)} updated, {len(o.unchanged)} unchanged, "
                  f"{len(o.removed)} removed.")
    for name, count in result.backfilled.items():
        console.print(f"{name}: backfilled {count} occurrence{'s' if count != 1 else ''}.")


@automations_app.command("list")
def automations_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The stored rules."""
    from automations.rules import rule_document
    from storage.automation_rules import list_rules

    with get_engine().connect() as conn:
        rules = list_rules(conn)
    if as_json:
        print_json([{**rule_document(r.definition), "applied_at": r.applied_at} for r in rules])
        return
    table = Table("name", "trigger", "where", "actions", "applied")
    for r in rules:
        table.add_row(r.name, r.trigger, r.where or "", ", ".join(a["kind"] for a in r.actions), str(r.applied_at))
    console.print(table)


@contextmanager
def _run_progress(enabled: bool) -> Iterator[Callable[[Any, int], None] | None]:
    """Deliveries done of those due, their rate, and the counts so far on stderr (a terminal only:
    ``progress_bar`` draws nothing on a pipe), or nothing with --json."""
    if not enabled:
        yield None
        return
    with common.progress_bar("deliveries", auto_refresh=False) as bar:
        task = bar.add_task("automations", total=None)

        def update(summary: Any, due: int) -> None:
            done = summary.delivered + summary.pending + summary.failed
            bar.update(task, completed=done, total=due, refresh=True,
                       description=f"automations: {summary.detected} detected, {summary.delivered} delivered")

        yield update


@automations_app.command("run")
def automations_run(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would be delivered; send nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Detect the time-based occurrences (trial_ending, trial_expired) and deliver what is pending."""
    from automations.deployments import run_prefect_deployment
    from automations.dispatch import run_automations

    with _run_progress(not as_json and not dry_run) as progress:
        summary = run_automations(get_engine(), dry_run=dry_run, run_deployment=run_prefect_deployment,
                                  progress=progress)
    if as_json:
        print_json({**summary.counts(), **({"would_deliver": summary.would_deliver} if dry_run else {})})
        return
    if dry_run:
        table = Table("delivery", "automation", "trigger", "customer", "action", "attempts")
        for d in summary.would_deliver:
            table.add_row(d["id"], d["automation"], d["trigger"], d["customer"], d["kind"], str(d["attempts"]))
        console.print(table)
        console.print(f"{summary.detected} detected; {len(summary.would_deliver)} would be delivered (dry run).")
        return
    console.print(f"{summary.detected} detected, {summary.delivered} delivered, {summary.pending} pending, "
                  f"{summary.failed} failed.")
    if summary.left_to:
        print(f"note: another run is delivering ({summary.left_to}); the pending deliveries are left to it",
              file=sys.stderr)


@automations_app.command("deliveries")
def automations_deliveries(
    status: Annotated[str | None, typer.Option("--status", help="pending, delivered or failed.")] = None,
    rule: Annotated[str | None, typer.Option("--automation", help="Only this automation's.")] = None,
    limit: Annotated[int, typer.Option("--limit")] = 1000,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The outbox: each action of each occurrence, newest first."""
    from funnelsync.cli.common import fail
    from storage.outbox import list_deliveries

    if status is not None and status not in ("pending", "delivered", "failed"):
        fail(f"--status {status!r}: use pending, delivered or failed", exit_code=2)
    with get_engine().connect() as conn:
        found = list_deliveries(conn, status=status, rule=rule, limit=limit)
    if as_json:
        print_json([d.as_dict() for d in found])
        return
    table = compact_table("delivery", "automation", "trigger", "customer", "action", "status", "attempts",
                          "last error")
    for d in found:
        table.add_row(d.id, d.rule_name, d.trigger, d.customer_uuid, d.kind, d.status, str(d.attempts),
                      d.last_error or "")
    console.print(table)


@automations_app.command("replay")
def automations_replay(
    refs: Annotated[list[str] | None, typer.Argument(help="Deliveries: occ_… (every action) or occ_…:N.")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Every failed delivery.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Deliver again (with a fresh count of attempts), now."""
    from automations.deployments import run_prefect_deployment
    from automations.dispatch import replay
    from funnelsync.cli.common import fail

    if not refs and not failed:
        fail("name deliveries (occ_… or occ_…:N) or give --failed", exit_code=2)
    try:
        summary = replay(get_engine(), refs or [], failed=failed, run_deployment=run_prefect_deployment)
    except LookupError as exc:
        fail(str(exc))
    if as_json:
        print_json(summary.counts())
        return
    console.print(f"{summary.delivered} delivered, {summary.pending} pending, {summary.failed} failed.")
