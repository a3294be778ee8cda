"""``funnelsync init``: create or upgrade the database (safe to repeat)."""

from __future__ import annotations

from funnelsync.cli.common import CliError, app, console, fail


@app.command()
def init() -> None:
    """Create or upgrade the database to the newest schema (safe to run twice)."""
    from storage.bulk_load import restore_deferred
    from storage.db import (
        current_revision,
        database_url,
        head_revision,
        is_known_revision,
        make_engine,
        redacted,
        upgrade,
    )

    url = database_url()
    try:
        engine = make_engine(url)
        before = current_revision(engine)
        if before is not None and not is_known_revision(before):
            fail(f"database {redacted(url)} is at schema {before}, newer than this code (which knows up to "
                 f"{head_revision()}): upgrade funnelsync, or use a database of this version")
        upgrade(engine)
        rebuilt = restore_deferred(engine)
    except CliError:
        raise
    except Exception as exc:
        fail(f"cannot initialise {redacted(url)}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    head = head_revision()
    if rebuilt:
        console.print(f"Rebuilt {len(rebuilt)} index(es) or foreign key(s) an interrupted load had left out: "
                      f"{', '.join(rebuilt)}.")
    if before == head:
        console.print(f"Database {redacted(url)} is up to date (schema {head}).")
    else:
        console.print(f"Database {redacted(url)} upgraded from {before or 'empty'} to schema {head}.")
