"""The ``funnelsync`` command.

Each command group lives in its own module and registers itself on ``app`` below; the shared pieces
(engine, JSON output, one-line failures) are in ``funnelsync.cli.common``.
"""

from __future__ import annotations

import sys

from funnelsync.cli.common import CliError, app, err_console

# Command modules register on import. One line per module keeps parallel work free of conflicts.
from funnelsync.cli import core as _core  # noqa: E402,F401  init, sources, customers, api-keys, serve
from funnelsync.cli import imports as _imports  # noqa: E402,F401  import csv|structured|sheet
from funnelsync.cli import sync as _sync  # noqa: E402,F401  sync NAME [--full-refresh] [--json]
from funnelsync.cli import metrics as _metrics  # noqa: E402,F401  metrics, metrics cohorts
from funnelsync.cli import merge as _merge  # noqa: E402,F401  merge, unmerge


def main() -> None:
    """Console entry point: run the app, turning known errors into one line on stderr."""
    try:
        app()
    except CliError as exc:
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
