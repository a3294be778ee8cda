"""Engines and schema upgrades.

The database is ``FUNNELSYNC_DATABASE_URL`` (any SQLAlchemy URL); without it an embedded SQLite file at
``$FUNNELSYNC_HOME/funnelsync.db`` (``FUNNELSYNC_HOME`` defaults to ``~/.funnelsync``).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

from storage.types import load_json

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def funnelsync_home() -> Path:
    """The folder for the embedded database and local state."""
    return Path(os.environ.get("FUNNELSYNC_HOME") or Path.home() / ".funnelsync").expanduser()


def database_url() -> str:
    """The configured database URL, or the embedded SQLite file."""
    url = os.environ.get("FUNNELSYNC_DATABASE_URL")
    if url:
        return normalize_url(url)
    return f"sqlite:///{funnelsync_home() / 'funnelsync.db'}"


def normalize_url(url: str) -> str:
    """Let users write ``postgresql://`` and still get psycopg 3 (the driver we install)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def redacted(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


SQLITE_PAGE_SIZE = 16384


def sqlite_busy_timeout() -> float:
    """Seconds a SQLite writer waits for another one to finish: ``FUNNELSYNC_SQLITE_BUSY_TIMEOUT``, else 30."""
    raw = os.environ.get("FUNNELSYNC_SQLITE_BUSY_TIMEOUT", "").strip()
    try:
        seconds = float(raw) if raw else 30.0
    except ValueError:
        raise ValueError(f"FUNNELSYNC_SQLITE_BUSY_TIMEOUT={raw!r}: expected a number of seconds") from None
    return max(0.0, seconds)


def is_database_locked(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's "database is locked": another writer held it past the busy timeout."""
    return "database is locked" in str(getattr(exc, "orig", None) or exc)


def make_engine(url: str | None = None, **kwargs: object) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout on every connection."""
    url = normalize_url(url or database_url())
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        busy = sqlite_busy_timeout()
        engine = create_engine(url, connect_args={"timeout": busy}, json_deserializer=load_json, **kwargs)  # type: ignore[arg-type]

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            # Only a new, empty database takes it (an existing file keeps its page size). Larger pages than
            # the default 4 KiB mean fewer page splits and WAL frames per written row; past 16 KiB the
            # first upsert gained nothing more.
            cur.execute(f"PRAGMA page_size={SQLITE_PAGE_SIZE}")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(busy * 1000)}")
            cur.execute("PRAGMA cache_size=-65536")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, json_deserializer=load_json, **kwargs)  # type: ignore[arg-type]


def alembic_config(engine: Engine):  # type: ignore[no-untyped-def]
    """An Alembic config bound to ``engine`` (used by ``init`` and the tests)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest schema). Safe to run repeatedly."""
    from alembic import command

    command.upgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, None when it has never been initialised."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str:
    """The newest schema revision shipped with this code."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head() or ""


def is_known_revision(revision: str) -> bool:
    """Whether this code ships ``revision`` (False for a schema written by a newer funnelsync)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory(str(MIGRATIONS_DIR)).get_revision(revision) is not None
    except CommandError:
        return False


class SchemaMismatch(RuntimeError):
    """The database is not at the schema this code needs, and only the user can decide to change it."""


def ensure_schema(engine: Engine) -> bool:
    """Make sure the database is at the newest schema; True when it was empty and the schema was just created.

    An empty database (no tables at all) gets the schema on first use, so every command works straight
    after installing. Anything else that is not at the newest schema is left alone and refused with a
    one-line reason: an older schema is upgraded only by ``funnelsync init`` (a migration can take long
    and should be chosen, not triggered by a read), and a schema newer than this code, or tables that are
    no funnelsync schema, are never touched.

    Raises:
        SchemaMismatch: the database is at an older or a newer schema, or holds tables of something else.
    """
    have = current_revision(engine)
    head = head_revision()
    if have == head:
        return False
    where = f"database {redacted(str(engine.url))}"
    if have is None:
        if not inspect(engine).get_table_names():
            upgrade(engine)
            return True
        raise SchemaMismatch(f"{where} holds tables but no funnelsync schema version: point "
                             "FUNNELSYNC_DATABASE_URL at an empty database or a funnelsync one")
    if not is_known_revision(have):
        raise SchemaMismatch(f"{where} is at schema {have}, newer than this code (which knows up to {head}): "
                             "upgrade funnelsync, or use a database of this version")
    raise SchemaMismatch(f"{where} is at schema {have}, this code needs {head}: run `funnelsync init` to upgrade")
