"""What every command shares: the Typer app, the engine, JSON output and one-line errors."""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime
from decimal import Decimal
from typing import Any, NoReturn

import typer
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from sqlalchemy import Engine
from typer._click import Context
from typer.core import TyperArgument, TyperGroup, TyperOption


def plain_placeholders(command: Any) -> None:
    """Help without type placeholders: a flag shows none, an option its value's name, an argument only its name.

    Typer labels every parameter with its Python type (``<bool>`` on a flag that takes no value,
    ``<str>`` everywhere else), which tells a user nothing the option's name and help do not.
    """
    help_option = command.get_help_option(Context(command))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if isinstance(param, TyperOption) and param.metavar is None:
            param.metavar = "" if param.is_flag else (param.name or "value").rstrip("_").upper()
        elif isinstance(param, TyperArgument):
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
    for sub in getattr(command, "commands", {}).values():
        plain_placeholders(sub)


class _Root(TyperGroup):
    """The root command group: every invocation (the console script or a test's runner) goes through ``main``."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        plain_placeholders(self)
        return super().main(*args, **kwargs)


app = typer.Typer(
    name="funnelsync",
    cls=_Root,
    help="Lead and free-trial data from many sources into one customer database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def whole_headers(table: Table) -> Table:
    """Keep every header word whole: a column never gets narrower than its header's longest word.

    Rich shrinks the widest columns to fit the terminal and cuts a header it cannot wrap ("Trial-to…");
    the cells wrap instead (folded, not cut: an id must stay whole), and a header wraps only between words.
    """
    for column in table.columns:
        if column.overflow == "ellipsis":
            column.overflow = "fold"
        header = column.header
        words = (Text.from_markup(header) if isinstance(header, str) else header).plain.split() \
            if isinstance(header, (str, Text)) else []
        if words:
            column.min_width = max(column.min_width or 0, *(len(word) for word in words))
    return table


def compact_table(*headers: str, **options: Any) -> Table:
    """A table of many columns that still fits an 80-column terminal: a rule under the header, no cell borders.

    Rich's default boxes spend three characters a column on borders and padding: eight or more columns whose
    headers stay whole (``whole_headers``) then need more than 80 columns, and the terminal wraps every line.
    """
    return Table(*headers, box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 0), **options)


class FittingConsole(Console):
    """A console that prints every table with whole headers (see ``whole_headers``)."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # noqa: D102 - Console.print, tables fitted first
        for obj in objects:
            if isinstance(obj, Table):
                whole_headers(obj)
                # A table's title and caption wrap within the table (soft wrapping would let a long
                # title run past the terminal's edge); messages keep the console's soft wrapping.
                kwargs.setdefault("soft_wrap", False)
        super().print(*objects, **kwargs)


# soft_wrap: a message piped to a file or another program is never broken mid-line.
console = FittingConsole(soft_wrap=True)
err_console = Console(stderr=True)


class CliError(Exception):
    """A failure the user can act on: printed as one line on stderr, exit code ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def database_reason(exc: BaseException) -> str:
    """The driver's own first line (``database is locked``, ``terminating connection …``), no SQL, no values."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


def fail(message: str, exit_code: int = 1) -> NoReturn:
    """Stop the command with a one-line reason."""
    raise CliError(message, exit_code)


class _RateColumn(ProgressColumn):
    """Items per second, e.g. ``1,234 rows/s``: Rich's recent speed, else the average since the start."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.completed and task.elapsed:
            speed = task.completed / task.elapsed
        return Text("" if speed is None else f"{speed:,.0f} {self.unit}/s", style="progress.data.speed")


def progress_bar(unit: str, *, auto_refresh: bool = True) -> Progress:
    """A progress display on stderr for a person watching: count, rate and time left; nothing on a pipe.

    Not on a terminal (a pipe, a log, a test) it is disabled: Rich would leave its last frame or an empty
    line, and a program reading stderr wants only the one-line errors. stdout stays for the results.
    """
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        _RateColumn(unit),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
        auto_refresh=auto_refresh,
    )


def get_engine(require_schema: bool = True) -> Engine:
    """The engine of ``FUNNELSYNC_DATABASE_URL`` (or the embedded SQLite file), schema checked."""
    from storage.db import ensure_schema, make_engine

    try:
        engine = make_engine()
    except Exception as exc:  # a malformed URL or a missing driver
        # Say where the URL came from: the user has to know which setting to fix.
        where = " (FUNNELSYNC_DATABASE_URL)" if os.environ.get("FUNNELSYNC_DATABASE_URL") else ""
        fail(f"cannot open the database{where}: {exc}")
    if require_schema:
        try:
            if ensure_schema(engine):
                err_console.print(f"Created the funnelsync schema (first use of the empty database "
                                  f"{engine.url.render_as_string(hide_password=True)}).", highlight=False,
                                  markup=False, soft_wrap=True)
        except RuntimeError as exc:
            fail(str(exc))
        except Exception as exc:
            fail(f"cannot reach the database {engine.url.render_as_string(hide_password=True)}: "
                 f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    return engine


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (datetimes ISO 8601 with offset), nothing else."""
    sys.stdout.write(json.dumps(value, default=_json_default, ensure_ascii=False, indent=2) + "\n")
    sys.stdout.flush()


def parse_settings(pairs: list[str] | None) -> dict[str, str]:
    """``key=value`` pairs from repeated ``--set`` options."""
    settings: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--set {pair!r}: expected key=value")
        settings[key.strip()] = value
    return settings


@app.callback()
def _root() -> None:
    """funnelsync: lead and free-trial data from many sources into one customer database."""
