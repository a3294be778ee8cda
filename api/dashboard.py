"""``/dashboard``: the funnel charts, the trial cohort table and a searchable customer table.

One HTML page, one script and one stylesheet from ``api/static/``: no CDN, no build step, so it works
on a machine with no internet. The charts are drawn on ``<canvas>`` by the script, which reads the same
JSON a program would (``/v1/metrics/funnel``, ``/v1/metrics/trial-cohorts``, ``/v1/customers``).

Auth: the page and its assets sit behind the API key like every ``/v1`` route. A browser gets the 401
with ``WWW-Authenticate: Basic`` and shows its login prompt: the API key goes in the user name, the
password stays empty. The browser then sends the same credentials with the page's own ``fetch`` calls
(same origin), so no session or cookie is needed.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, RedirectResponse

from api.auth import require_api_key
from api.errors import NotFound, no_nul_in_url

STATIC_DIR = Path(__file__).parent / "static"
# Only these files are served: a fixed list, so no path from the URL ever reaches the file system.
ASSETS = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}

router = APIRouter(tags=["dashboard"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)])


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
def root() -> RedirectResponse:
    """The dashboard is the home page."""
    return RedirectResponse("/dashboard")


@router.api_route("/dashboard", methods=["GET", "HEAD"], include_in_schema=False)
def dashboard() -> FileResponse:
    """The dashboard page."""
    return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})


@router.api_route("/dashboard/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
def asset(name: str) -> FileResponse:
    """A script or stylesheet of the dashboard."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no dashboard asset named {name!r}")
    return FileResponse(STATIC_DIR / name, media_type=media_type, headers={"Cache-Control": "no-cache"})
