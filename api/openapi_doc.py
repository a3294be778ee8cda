"""The OpenAPI document declares the answers the app really gives.

FastAPI documents only each route's success and its own validation error (``{"detail": …}``, a shape
this app never sends: every error is ``{"code", "message", "errors"}``, api/errors.py). Here every
operation also lists the errors it can answer, each with that shape, so a client generated from the
document, or a checker such as schemathesis, meets no undocumented status.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "reason"],
                "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
            },
        },
    },
}

REASONS = {
    "400": "The request cannot be answered as asked (a filter that does not fit its field).",
    "401": "Missing or invalid credentials: an API key, or for a receiver the vendor's signature.",
    "404": "No such resource (or no such data source for a receiver).",
    "409": "The request conflicts with the current state (a name already taken, a disabled source, a merge that "
           "cannot be undone).",
    "413": "The request body exceeds the size limit.",
    "422": "A field is invalid: ``errors`` names each one and why.",
    "500": "A receiver's source has settings that cannot be used (the server log names the problem).",
    "502": "A receiver could not re-read the affected records from the vendor; the vendor retries.",
    "503": "The database is busy (SQLite: another writer held it past the busy timeout); retry after "
           "``Retry-After`` seconds.",
}
RECEIVER_PREFIXES = ("/webhooks/", "/segment/", "/app-store/", "/google-play/")


def _errors_of(path: str, method: str) -> list[str]:
    if path.startswith(RECEIVER_PREFIXES):
        return ["401", "404", "409", "413", "422", "500", "502", "503"]
    codes = ["401", "404", "422", "503"]
    if method in ("post", "put", "patch", "delete"):
        codes += ["409", "413"]  # a name already taken, a merge that cannot be undone; a body over the limit
    if path.startswith("/v1/metrics/"):
        codes.append("400")
    return codes


def document_errors(app: FastAPI) -> None:
    """Make ``app.openapi()`` list, for every operation, the error answers it can give, in their real shape."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
            for name in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(name, None)
            for path, operations in schema.get("paths", {}).items():
                for method, operation in operations.items():
                    responses = operation.setdefault("responses", {})
                    for code in _errors_of(path, method):
                        responses[code] = {
                            "description": REASONS[code],
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                        }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
