"""The API's busiest calls answered ahead of FastAPI's routing: one customer, the search by email, a create.

``GET /v1/customers/{uuid}``, ``GET /v1/customers/search?email=`` and ``POST /v1/customers`` are what
integrations call on every event they handle. Through the routers each paid for matching the path
against every router and solving the dependencies; the reads also for two trips through the thread
pool (the endpoint, then validating what it returned) and several SQLAlchemy statements: far more than
the work itself. This ASGI middleware answers the reads with one statement
(``storage.customers.linked_views``) and the create with ``api.customers.create_answer`` (what the route
runs), in the JSON the routes send, byte for byte (the same ``api.wire`` builders and serializer, the
same error responses).

It answers only what it is sure of: HTTP Basic with a live key, a ``cus_`` uuid that exists, a search
with ``email`` as its only parameter, a create with no query. Anything else (a session cookie, another
parameter, an unknown or merged-away uuid, a database error on a read) goes on to the routes, which stay
the one definition of these endpoints and of their schema in /openapi.json.

On SQLite the reads run on the event loop itself, on a connection of their own: a local indexed read
takes less time than handing it to a thread. On PostgreSQL the database is across a socket, so they run
in the thread pool on a pooled connection, as the routes do.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import StaticPool
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import LiveKeys, basic_key
from api.customers import create_answer
from api.errors import ApiError, busy_response, error_response, json_body
from api.wire import DEFAULT_PER_PAGE, customer_json, json_bytes, page_envelope
from storage.api_keys import verify_api_key
from storage.customers import linked_view_by_uuid, linked_views_by_email
from storage.db import is_database_locked, make_engine

CUSTOMERS = "/v1/customers"
SEARCH = "/v1/customers/search"
_DATABASE_ERRORS = (DBAPIError, sqlite3.Error, psycopg.Error)
R = TypeVar("R")


class HotPaths:
    """ASGI middleware in front of the app's routes (``create_app`` installs it)."""

    def __init__(self, app: ASGIApp, engine: Engine, live_keys: LiveKeys) -> None:
        self.app = app
        self.engine = engine
        self.live_keys = live_keys
        self.sqlite = engine.dialect.name == "sqlite"
        # An in-memory SQLite database is one per connection: only the pool's own connection sees it.
        self.enabled = not self.sqlite or engine.url.database not in (None, "", ":memory:")
        # SQLite: the reads' own connection, from an engine of its own (never one of the app's pool, which
        # it would hold for the life of the app); test clients run the app from several threads.
        self._reader: Engine | None = None
        self._conn: Connection | None = None
        self._conn_lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http" and not scope.get("root_path") and "\x00" not in scope["path"]:
            path, method = scope["path"], scope["method"]
            response: Response | None = None
            if method == "GET" and (path == SEARCH or (path.startswith(CUSTOMERS + "/cus_")
                                                       and "/" not in path[len(CUSTOMERS) + 1:])):
                response = await self._read(scope)
            elif method == "POST" and path == CUSTOMERS and not scope["query_string"]:
                response = await self._create(scope, receive)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _read(self, scope: Scope) -> Response | None:
        key = _basic_key(scope)
        if key is None:
            return None
        return await self._on_connection(lambda conn: self._answer_read(conn, scope, key))

    async def _create(self, scope: Scope, receive: Receive) -> Response | None:
        key = _basic_key(scope)
        if key is None or not await self._on_connection(lambda conn: self._key_is_live(conn, key)):
            return None  # the route answers, the body unread
        request = Request(scope, receive)
        try:
            return await create_answer(request, await json_body(request))
        except ApiError as refused:
            return error_response(refused)
        except OperationalError as exc:
            if not is_database_locked(exc):
                raise
            return busy_response()

    async def _on_connection(self, work: Callable[[Connection], R | None]) -> R | None:
        """``work`` on a read connection (None, for the routes to answer, after a database error)."""
        if self.sqlite:
            return self._on_own_connection(work)
        return await run_in_threadpool(self._on_pooled_connection, work)

    def _on_own_connection(self, work: Callable[[Connection], R | None]) -> R | None:
        with self._conn_lock:
            try:
                if self._conn is None:
                    self._reader = make_engine(self.engine.url.render_as_string(hide_password=False),
                                               poolclass=StaticPool)
                    self._conn = self._reader.connect().execution_options(isolation_level="AUTOCOMMIT")
                return work(self._conn)
            except _DATABASE_ERRORS:
                # Dropped: the next request opens a new one, and this one is answered by the route.
                if self._conn is not None:
                    self._conn.invalidate()
                    self._conn.close()
                if self._reader is not None:
                    self._reader.dispose()
                self._conn = self._reader = None
                return None

    def _on_pooled_connection(self, work: Callable[[Connection], R | None]) -> R | None:
        try:
            with self.engine.connect() as conn:
                return work(conn)
        except _DATABASE_ERRORS:
            return None

    def _answer_read(self, conn: Connection, scope: Scope, key: str) -> Response | None:
        path: str = scope["path"]
        if path == SEARCH:
            params = QueryParams(scope["query_string"]).multi_items()
            if len(params) != 1 or params[0][0] != "email" or not params[0][1].strip() or "\x00" in params[0][1]:
                return None
            if not self._key_is_live(conn, key):
                return None
            views = linked_views_by_email(conn, params[0][1].strip(), limit=DEFAULT_PER_PAGE + 1)
            base_url = str(Request(scope).base_url)
            entries = [customer_json(view, links, base_url) for view, links in views[:DEFAULT_PER_PAGE]]
            body: dict[str, Any] = page_envelope(entries, [view["id"] for view, _ in views], DEFAULT_PER_PAGE)
        else:
            if scope["query_string"] or not self._key_is_live(conn, key):
                return None
            found = linked_view_by_uuid(conn, path[len(CUSTOMERS) + 1:])
            if found is None:
                return None  # the route says why: unknown, deleted, or merged into another customer
            body = customer_json(*found, str(Request(scope).base_url))
        return Response(json_bytes(body), media_type="application/json")

    def _key_is_live(self, conn: Connection, key: str) -> bool:
        return self.live_keys.check(key, lambda k: verify_api_key(conn, k))


def _basic_key(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return basic_key(value.decode("latin-1"))
    return None
