"""``/dashboard``: the funnel charts, the trial cohort table and a searchable customer table.

One HTML page, one script and one stylesheet from ``api/static/``: no CDN, no build step, so it works
on a machine with no internet. The charts are drawn on ``<canvas>`` by the script, which reads the same
JSON a program would (``/v1/metrics/funnel``, ``/v1/metrics/trial-cohorts``, ``/v1/customers``).

Sign-in: ``/login`` takes an API key and opens a browser session (``api.sessions``: an HttpOnly,
SameSite=Strict cookie, a CSRF token for the writes); the page and its data calls then need no Basic
prompt. Scripts keep using HTTP Basic. The script and stylesheet hold no data and are served to anyone
(the sign-in page uses the stylesheet).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select

from api.auth import request_key, require_api_key
from api.errors import NotFound, no_nul_in_url
from api.sessions import CSRF_COOKIE, SESSION_COOKIE, SESSION_SECONDS, SessionStore
from storage.api_keys import verify_api_key
from storage.schema import customers

STATIC_DIR = Path(__file__).parent / "static"
# Only these files are served: a fixed list, so no path from the URL ever reaches the file system.
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "automations.js": "text/javascript; charset=utf-8",
    "automations.css": "text/css; charset=utf-8",
}
NO_CACHE = {"Cache-Control": "no-cache"}

public = APIRouter(tags=["dashboard"], dependencies=[Depends(no_nul_in_url)])
router = APIRouter(tags=["dashboard"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)])

LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in — funnelsync</title><link rel="stylesheet" href="/dashboard/static/dashboard.css"></head>
<body class="login"><main><h1>funnelsync</h1>
<form method="post" action="/login" id="login">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" required autofocus
 placeholder="fsk_…">
<button type="submit">Sign in</button>
{error}
<p class="hint">Create a key with <code>funnelsync api-keys create NAME</code>.</p>
</form></main></body></html>
"""
WRONG_KEY = '<p id="login-error" role="alert">That API key is not valid (unknown or revoked).</p>'


def _store(request: Request) -> SessionStore:
    store = getattr(request.app.state, "sessions", None)
    if store is None:
        store = request.app.state.sessions = SessionStore()
    return store


def _signed_in(request: Request) -> bool:
    _store(request)
    try:
        key = request_key(request)
    except Exception:  # noqa: BLE001 - a refused session is simply not signed in
        return False
    if key is None:
        return False
    with request.app.state.engine.connect() as conn:
        return verify_api_key(conn, key)


@public.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
def root() -> RedirectResponse:
    """The dashboard is the home page."""
    return RedirectResponse("/dashboard")


@public.api_route("/login", methods=["GET", "HEAD"], include_in_schema=False)
def login_page() -> HTMLResponse:
    """The sign-in page."""
    return HTMLResponse(LOGIN_PAGE.format(error=""), headers=NO_CACHE)


@public.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Check the API key of the form; on success open a session and go to the dashboard."""
    origin = request.headers.get("origin")
    if origin and origin.rstrip("/") != f"{request.url.scheme}://{request.url.netloc}":
        return HTMLResponse(LOGIN_PAGE.format(error=WRONG_KEY), status_code=403)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0].strip()
    with request.app.state.engine.connect() as conn:
        ok = bool(key) and verify_api_key(conn, key)
    if not ok:
        return HTMLResponse(LOGIN_PAGE.format(error=WRONG_KEY), status_code=401, headers=NO_CACHE)
    sid, session = _store(request).open(key)
    response = RedirectResponse("/dashboard", status_code=303)
    secure = request.url.scheme == "https"
    response.set_cookie(SESSION_COOKIE, sid, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                        secure=secure, path="/")
    # Readable by the page's script, which echoes it in X-CSRF-Token on writes.
    response.set_cookie(CSRF_COOKIE, session.csrf, max_age=SESSION_SECONDS, httponly=False, samesite="strict",
                        secure=secure, path="/")
    return response


@public.post("/logout", include_in_schema=False)
def logout(request: Request) -> Response:
    """End the browser session."""
    _store(request).close(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@public.api_route("/dashboard", methods=["GET", "HEAD"], include_in_schema=False)
def dashboard(request: Request) -> Response:
    """The dashboard page (the sign-in page first when the browser presents no key)."""
    if not _signed_in(request):
        return RedirectResponse("/login", status_code=303)
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html; charset=utf-8", headers=NO_CACHE)


@public.api_route("/dashboard/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
def asset(name: str) -> FileResponse:
    """A script or stylesheet of the dashboard."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no dashboard asset named {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers=NO_CACHE)


@router.get("/dashboard/data-range", include_in_schema=False)
def data_range(request: Request) -> dict[str, Any]:
    """The first and last lead and trial dates held, for the "no data in this range" message."""
    with request.app.state.engine.connect() as conn:
        row = conn.execute(select(
            func.min(customers.c.lead_created_at), func.max(customers.c.lead_created_at),
            func.min(customers.c.free_trial_started_at), func.max(customers.c.free_trial_started_at),
            func.count(),
        )).one()
    dates = [d for d in row[:4] if d is not None]
    return {
        "customers": row[4],
        "first": min(dates).date().isoformat() if dates else None,
        "last": max(dates).date().isoformat() if dates else None,
    }


@router.get("/dashboard/customers/{uuid}/history", include_in_schema=False)
def customer_history(request: Request, uuid: str) -> dict[str, Any]:
    """A customer's source records (their reported fields, raw values and subscriptions; what an unmerge
    names) and its merge log with, for each merge still in place, the record that undoes it."""
    from storage.customer_pages import customer_id_by_uuid, merge_undo_records, source_records
    from storage.merge import list_merge_events

    with request.app.state.engine.connect() as conn:
        customer_pk = customer_id_by_uuid(conn, uuid)
        if customer_pk is None:
            raise NotFound(f"no customer with uuid {uuid!r}")
        records = source_records(conn, customer_pk)
        events = list_merge_events(conn, uuid, limit=50)
        undo = merge_undo_records(conn, customer_pk, uuid)
    # "unmerge": the record that POST /v1/customers/unmerges names to undo that merge (None: nothing to undo).
    return {"records": jsonable_encoder(records),
            "merges": [{**event.as_json(), "unmerge": undo.get(event.uuid)} for event in events]}
