"""Errors of the REST API and the JSON body reader with its size cap.

Every error answers ``{"code": N, "message": "...", "errors": [{"field": ..., "reason": ...}]}``:
``message`` alone is enough for a person, ``errors`` names each offending field for a program.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from storage.db import is_database_locked, sqlite_busy_timeout

# Generous for a customer with many attributes, far below what would hurt the server.
MAX_BODY_BYTES = 1024 * 1024


class ApiError(Exception):
    """An error answered as JSON with a status code."""

    def __init__(self, status: int, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []

    def body(self) -> dict[str, Any]:
        """The JSON body of the response."""
        out: dict[str, Any] = {"code": self.status, "message": self.message}
        if self.errors:
            out["errors"] = self.errors
        return out


class NotFound(ApiError):
    """404 with a message naming what was not found."""

    def __init__(self, message: str) -> None:
        super().__init__(404, message)


class Invalid(ApiError):
    """422 naming the fields and why each is refused."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        # A body key "" (or "custom." + "") would be named by nothing; it is shown as the empty string it is.
        errors = [e if e["field"] and not e["field"].endswith(".") else {**e, "field": e["field"] + '""'}
                  for e in errors]
        message = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        super().__init__(422, message, errors)

    @classmethod
    def one(cls, field: str, reason: str) -> Invalid:
        """A 422 about a single field."""
        return cls([{"field": field, "reason": reason}])


def install_error_handler(app: FastAPI) -> None:
    """Answer :class:`ApiError`, and FastAPI's own errors, in the one documented shape.

    FastAPI's defaults (``{"detail": ...}``) would otherwise answer a 401 without a key, an unknown
    path or method, and a query parameter its validation refuses (the metrics dates).
    """

    @app.exception_handler(ApiError)
    async def _answer(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Keep the headers: a 401 carries the WWW-Authenticate challenge.
        return JSONResponse({"code": exc.status_code, "message": str(exc.detail)}, status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(OperationalError)
    async def _busy(_request: Request, exc: OperationalError) -> JSONResponse:
        # SQLite allows one writer: past the busy timeout the write is refused. The client may retry;
        # any other database failure stays a 500 (and the server log has its traceback).
        if not is_database_locked(exc):
            raise exc
        return busy_response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": str(e["loc"][-1]) if e.get("loc") else "request", "reason": str(e.get("msg", "invalid"))}
                  for e in exc.errors()]
        return JSONResponse(Invalid(errors).body(), status_code=422)


def error_response(exc: ApiError) -> JSONResponse:
    """The answer to an :class:`ApiError` (also sent by ``api.hot_paths``, which runs ahead of the handlers)."""
    return JSONResponse(exc.body(), status_code=exc.status)


def busy_response() -> JSONResponse:
    """The answer when SQLite's write lock was held by another writer past the busy timeout."""
    message = f"the database is busy: another writer held it for more than {sqlite_busy_timeout():g} s; retry"
    return JSONResponse({"code": 503, "message": message}, status_code=503, headers={"Retry-After": "1"})


async def json_body(request: Request) -> Any:
    """FastAPI dependency: the request's JSON body, read with a size cap.

    An empty body reads as ``{}``. Raises 413 past :data:`MAX_BODY_BYTES` (checked on the declared
    length first, then while streaming, so a chunked upload cannot get around it) and 422 when the
    body is not JSON.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"request body of {declared} bytes exceeds the limit of {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"request body exceeds the limit of {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Invalid.one("body", f"not valid JSON: {exc}") from exc
    except ValueError as exc:
        raise Invalid.one("body", str(exc)) from exc
    where = _nul_in(body, "body")
    if where is not None:
        # PostgreSQL text and json cannot hold U+0000; refuse it here rather than fail on write.
        raise Invalid.one(where, "text cannot contain the NUL character (\\u0000)")
    return body


def _finite_float(text: str) -> float:
    # 1e999 is valid JSON but overflows to inf, which no JSON column can hold (stored as null, or a 500).
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range")
    return value


def _nul_in(value: Any, path: str) -> str | None:
    """The path of the first string (value or key) holding U+0000, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                return path
            found = _nul_in(item, key if path == "body" else f"{path}.{key}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_in(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which are not JSON: PostgreSQL's json type refuses them and
    # no client could read them back.
    raise ValueError(f"{name} is not a JSON number")


# A route parameter holding the JSON body read by :func:`json_body`.
JsonBody = Annotated[Any, Depends(json_body)]


def require_object(body: Any) -> dict[str, Any]:
    """The body as a JSON object, else 422."""
    if not isinstance(body, dict):
        raise Invalid.one("body", f"expected a JSON object, got {type(body).__name__}")
    return body


def body_example(example: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` documenting a JSON request body by example (the body is read by :func:`json_body`)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"},
                                                                                "example": example}}}}


async def no_nul_in_url(request: Request) -> None:
    """Router dependency: 422 for a U+0000 in the path or a query parameter (PostgreSQL cannot compare it).

    Async (it does no I/O): a sync dependency costs each request a trip through the thread pool."""
    if "\x00" in request.url.path:
        raise Invalid.one("path", "cannot contain the NUL character (%00)")
    for key, value in request.query_params.multi_items():
        if "\x00" in key or "\x00" in value:
            raise Invalid.one(key.replace("\x00", ""), "cannot contain the NUL character (%00)")
