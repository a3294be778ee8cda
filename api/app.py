"""The FastAPI application: ``create_app(engine)``.

Routers live in their own modules and are included here, one line each. Every route needs an API key
(HTTP Basic, key as user name) except ``/health`` and the push receivers, which authenticate by
signature.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text

from api.account import router as account_router
from api.attributes import router as attributes_router
from api.auth import LiveKeys, require_api_key
from api.automation_deliveries import router as automation_deliveries_router
from api.automations import router as automations_router
from api.bulk_edits import router as bulk_edits_router
from api.contacts import router as contacts_router
from api.customer_edits import router as customer_edits_router
from api.customers import customer_creates
from api.customers import router as customers_router
from api.dashboard import public as dashboard_public
from api.dashboard import router as dashboard_router
from api.dashboard_table import router as dashboard_table_router
from api.data_sources import router as data_sources_router
from api.errors import install_error_handler
from api.hot_paths import HotPaths
from api.merges import router as merges_router
from api.metrics import router as metrics_router
from api.openapi_doc import document_errors
from api.sessions import SessionStore
from api.webhooks import router as webhooks_router


def create_app(engine: Engine, *, key_cache_seconds: float = 0.0) -> FastAPI:
    """Build the app around a database engine.

    ``key_cache_seconds``: how long a key found live is trusted before it is checked again (0: every
    request); a revoked key keeps working in this process for at most that long.
    """
    # No /docs or /redoc: FastAPI's pages load Swagger UI from a CDN, and funnelsync must work with no
    # internet. The schema itself stays at /openapi.json for any local OpenAPI viewer or client generator.
    app = FastAPI(title="funnelsync", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.state.sessions = SessionStore()
    app.state.live_keys = LiveKeys(key_cache_seconds)
    app.state.customer_creates = customer_creates(engine)

    @app.api_route("/health", methods=["GET", "HEAD"], include_in_schema=False)
    def health() -> JSONResponse:
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception:
            return JSONResponse({"status": "error", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/v1/ping", dependencies=[Depends(require_api_key)])
    def ping() -> dict[str, str]:
        return {"data": "pong!"}

    # Routers, one line each (authenticated routers declare Depends(require_api_key) themselves):
    install_error_handler(app)
    app.include_router(account_router)
    app.include_router(data_sources_router)
    app.include_router(merges_router)
    app.include_router(attributes_router)
    app.include_router(automations_router)
    app.include_router(automation_deliveries_router)
    app.include_router(customer_edits_router)
    app.include_router(bulk_edits_router)
    app.include_router(customers_router)
    app.include_router(contacts_router)
    app.include_router(dashboard_public)  # the sign-in page, the page itself (redirects), its assets
    app.include_router(dashboard_router)
    app.include_router(dashboard_table_router)
    app.include_router(metrics_router)
    app.include_router(webhooks_router)  # signed by the integrations, no API key
    document_errors(app)
    app.add_middleware(HotPaths, engine=engine, live_keys=app.state.live_keys)
    return app
