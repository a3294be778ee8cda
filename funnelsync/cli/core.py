"""Core commands: init (more land with the storage layer)."""

from __future__ import annotations



from funnelsync.cli.common import app, console, fail


@app.command()
def init() -> None:
    """Create or upgrade the database to the newest schema (safe to run twice)."""
    from storage.db import current_revision, database_url, head_revision, make_engine, redacted, upgrade

    url = database_url()
    try:
        engine = make_engine(url)
        before = current_revision(engine)
        upgrade(engine)
    except Exception as exc:
        fail(f"cannot initialise {redacted(url)}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    head = head_revision()
    if before == head:
        console.print(f"Database {redacted(url)} is up to date (schema {head}).")
    else:
        console.print(f"Database {redacted(url)} upgraded from {before or 'empty'} to schema {head}.")



