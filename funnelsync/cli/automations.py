"""``funnelsync automations validate|apply|list``: rules that fire downstream work on lead and trial events."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.table import Table

from funnelsync.cli.common import app, console, get_engine, print_json

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
