"""A fake Google Sheets API v4 on 127.0.0.1 for gspread (which uses requests, so respx cannot serve it).

It answers the two calls a worksheet read makes, with the real response shapes:
- ``GET /v4/spreadsheets/{id}?includeGridData=false``: the metadata of
  ``fakes/data/google_sheets_spreadsheet_metadata.json`` (a copy of the reference payload);
- ``GET /v4/spreadsheets/{id}/values/{range}``: ``{"range", "majorDimension", "values"}`` with ragged
  rows (trailing empty cells dropped, as Google does).
Unknown spreadsheets answer Google's 404 error body; queued failures (``fail_next``) answer e.g. the
429 ``RESOURCE_EXHAUSTED`` body that gspread's ``BackOffHTTPClient`` retries.

``redirect_session(server)`` is a ``requests.Session`` that rewrites the Google hosts to the fake, the
injection point the reference recommends (patching ``gspread.urls`` does nothing).
"""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

METADATA = json.loads(
    (Path(__file__).resolve().parent / "data" / "google_sheets_spreadsheet_metadata.json").read_text()
)
SHEET_ID = METADATA["spreadsheetId"]
GOOGLE_HOSTS = ("https://sheets.googleapis.com", "https://www.googleapis.com")


class FakeSheets:
    """In-memory spreadsheets served over HTTP; ``values[(sheet_id, title)]`` holds the grid."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[list[str]]] = {}
        self.failures: list[tuple[int, dict[str, Any]]] = []
        self.requests: list[tuple[str, str]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeSheets:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def set_rows(self, rows: list[list[str]], title: str = "Leads", sheet_id: str = SHEET_ID) -> None:
        """Store a worksheet's cells; trailing empty cells and rows are dropped as Google does."""
        trimmed = []
        for row in rows:
            row = list(row)
            while row and row[-1] == "":
                row.pop()
            trimmed.append(row)
        while trimmed and not trimmed[-1]:
            trimmed.pop()
        self.values[(sheet_id, title)] = trimmed

    def fail_next(self, status: int = 429) -> None:
        """Answer the next request with a Google error body of this status."""
        names = {429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}
        message = {
            429: "Quota exceeded for quota metric 'Read requests' and limit 'Read requests per minute per user' "
                 "of service 'sheets.googleapis.com'",
        }.get(status, "error")
        self.failures.append((status, {"error": {"code": status, "message": message, "status": names.get(status, "")}}))

    def _metadata(self, sheet_id: str) -> dict[str, Any]:
        meta = copy.deepcopy(METADATA)
        meta["spreadsheetId"] = sheet_id
        titles = [t for (sid, t) in self.values if sid == sheet_id] or ["Leads"]
        meta["sheets"] = [
            {"properties": {"sheetId": i, "title": t, "index": i, "sheetType": "GRID",
                            "gridProperties": {"rowCount": 1000, "columnCount": 26}}}
            for i, t in enumerate(titles)
        ]
        return meta

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                """Keep request logs out of the test output."""

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                fake.requests.append(("GET", self.path))
                if fake.failures:
                    status, body = fake.failures.pop(0)
                    self._send(status, body)
                    return
                parts = path.split("/")
                # /v4/spreadsheets/{id}  or  /v4/spreadsheets/{id}/values/{range}
                if len(parts) < 4 or parts[1:3] != ["v4", "spreadsheets"]:
                    self._send(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})
                    return
                sheet_id = parts[3]
                if not any(sid == sheet_id for sid, _ in fake.values):
                    self._send(404, {"error": {"code": 404, "message": "Requested entity was not found.",
                                               "status": "NOT_FOUND"}})
                    return
                if len(parts) == 4:
                    self._send(200, fake._metadata(sheet_id))
                    return
                if len(parts) == 6 and parts[4] == "values":
                    title = unquote(parts[5]).split("!")[0].strip("'")
                    rows = fake.values.get((sheet_id, title))
                    if rows is None:
                        self._send(400, {"error": {"code": 400, "message": f"Unable to parse range: {title}",
                                                   "status": "INVALID_ARGUMENT"}})
                        return
                    width = max((len(r) for r in rows), default=0)
                    last_col = chr(ord("A") + max(width, 1) - 1)
                    body = {"range": f"'{title}'!A1:{last_col}{max(len(rows), 1)}", "majorDimension": "ROWS"}
                    if rows:
                        body["values"] = rows  # Google omits "values" for an empty sheet
                    self._send(200, body)
                    return
                self._send(404, {"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}})

        return Handler


class RedirectSession(requests.Session):
    """A requests session that sends Google API calls to the fake server instead."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        for host in GOOGLE_HOSTS:
            if url.startswith(host):
                url = self.base_url + url[len(host):]
                break
        return super().request(method, url, *args, **kwargs)
