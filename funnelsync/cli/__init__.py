"""The ``funnelsync`` command.

Each command group lives in its own module and registers itself on ``app`` below; the shared pieces
(engine, JSON output, one-line failures) are in ``funnelsync.cli.common``.
"""

from __future__ import annotations

import sys

# Typer vendors click; its exception classes are not re-exported, so they come from there.
import typer
from sqlalchemy.exc import DBAPIError, OperationalError
from typer._click import exceptions as click_exceptions

from funnelsync.cli import api_keys as _api_keys  # noqa: E402,F401  api-keys create|revoke|list
from funnelsync.cli import automations as _automations  # noqa: E402,F401  automations validate|apply|run|…
from funnelsync.cli import bulk_edit as _bulk_edit  # noqa: E402,F401  bulk-edit
from funnelsync.cli import contacts as _contacts  # noqa: E402,F401  contacts list|show|add|edit|remove
from funnelsync.cli import customers as _customers  # noqa: E402,F401  customers list|show|add|edit
from funnelsync.cli import demo as _demo  # noqa: E402,F401  demo (the flows end to end on local stand-ins)
from funnelsync.cli import google_play as _google_play  # noqa: E402,F401  import google-play-sales
from funnelsync.cli import imports as _imports  # noqa: E402,F401  import csv|structured|sheet

# Command modules register on import. One line per module keeps parallel work free of conflicts.
from funnelsync.cli import init as _init  # noqa: E402,F401  init
from funnelsync.cli import merge as _merge  # noqa: E402,F401  merge, unmerge
from funnelsync.cli import metrics as _metrics  # noqa: E402,F401  metrics, metrics cohorts
from funnelsync.cli import serve as _serve  # noqa: E402,F401  serve (the HTTP API and the dashboard)
from funnelsync.cli import sources as _sources  # noqa: E402,F401  sources add|list
from funnelsync.cli import sync as _sync  # noqa: E402,F401  sync NAME [--full-refresh] [--json]
from funnelsync.cli import worker as _worker  # noqa: E402,F401  worker (serve the Prefect deployments)
from funnelsync.cli.common import CliError, app, database_reason, err_console
from storage.db import is_database_locked, sqlite_busy_timeout


def main() -> None:
    """Console entry point: run the app, turning every known failure into one line on stderr.

    Click's standalone mode would print usage errors as a multi-line box; a script reading stderr
    wants one line saying what was wrong, and the exit code (2 for usage, 1 otherwise unless the
    command says more precisely).
    """
    try:
        result = app(standalone_mode=False)
    except CliError as exc:
        _one_line(str(exc))
        sys.exit(exc.exit_code)
    except click_exceptions.UsageError as exc:
        message = exc.format_message().strip()
        if message:  # empty when help was shown because no command was given
            where = f" ({exc.ctx.command_path})" if exc.ctx is not None else ""
            _one_line(f"{message}{where}; see --help")
        sys.exit(exc.exit_code)
    except typer.Abort:
        _one_line("aborted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except click_exceptions.ClickException as exc:
        _one_line(exc.format_message())
        sys.exit(exc.exit_code)
    except DBAPIError as exc:
        if isinstance(exc, OperationalError) and is_database_locked(exc):
            # What was committed before stays; the rest is rolled back, so the command can simply run again.
            _one_line(f"the database is locked: another writer held it for more than {sqlite_busy_timeout():g} s "
                      "(FUNNELSYNC_SQLITE_BUSY_TIMEOUT); run the command again when it has finished")
        else:
            # The database went away mid-command (a connection terminated, the server gone): its transaction
            # rolled back, so nothing of the interrupted batch is stored; one line instead of a traceback.
            _one_line(f"database error: {database_reason(exc)}; the interrupted batch was rolled back, "
                      "run the command again to finish")
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def _one_line(message: str) -> None:
    err_console.print(f"error: {' '.join(message.split())}", markup=False, highlight=False, soft_wrap=True)
