"""Google Sheets: read one worksheet's values with gspread and a service account.

gspread speaks ``requests`` (not httpx), so the shared httpx client and respx do not apply; rate limits
are handled by gspread's ``BackOffHTTPClient`` (429, 408 and 5xx retried with exponential backoff up to
128 s). Tests inject a ``requests.Session`` that points at a local fake API (``open_client(session=…)``).

Calls made (gspread 6.x): ``GET /v4/spreadsheets/{id}?includeGridData=false`` (metadata, twice: the
spreadsheet and the worksheet lookup) and ``GET /v4/spreadsheets/{id}/values/'{title}'`` (the formatted
values, ragged rows: Google drops trailing empty cells).

The rows are parsed exactly like a flexible CSV (``connectors.files.flexible_csv.RowMapper``) by the flow.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from connectors.base import Feed
from connectors.custom import CustomSource

SCOPES = ["https://www.googleapis.com/auth/spreadsheets.readonly"]
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{20,}$")


class GoogleSheetsSource(CustomSource):
    """A custom source read from one worksheet: imported once by hand, then again on every schedule."""

    kind = "google_sheets"
    title = "Google Sheets"
    system_name = "Custom"
    feeds = frozenset({Feed.PULLED, Feed.FILE, Feed.API})


class SheetsError(Exception):
    """A Google Sheets read that failed for a reason the user can act on."""


def spreadsheet_key(id_or_url: str) -> str:
    """The spreadsheet id from an id or a ``docs.google.com/spreadsheets/d/<id>/…`` URL.

    Raises:
        SheetsError: when neither.
    """
    text = id_or_url.strip()
    if "/" in text:
        from gspread.exceptions import NoValidUrlKeyFound
        from gspread.utils import extract_id_from_url

        try:
            return extract_id_from_url(text)
        except NoValidUrlKeyFound:
            raise SheetsError(f"{id_or_url!r} is not a Google Sheets URL (…/spreadsheets/d/<id>/…)") from None
    if not _KEY_RE.match(text):
        raise SheetsError(f"{id_or_url!r} is not a spreadsheet id (the long id in the sheet's URL)")
    return text


def open_client(credentials_file: str | Path | None = None, *, session: Any = None) -> Any:
    """A gspread client with exponential backoff on rate limits.

    Args:
        credentials_file: a service-account JSON key file; default ``GOOGLE_APPLICATION_CREDENTIALS``.
        session: a ready ``requests.Session`` to use instead (tests, proxies); no credentials then.

    Raises:
        SheetsError: no credentials, or a key file that cannot be read.
    """
    import gspread

    if session is not None:
        return gspread.Client(auth=None, session=session, http_client=gspread.BackOffHTTPClient)  # type: ignore[arg-type]
    path = credentials_file or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if not path:
        raise SheetsError(
            "no Google service-account credentials: pass --credentials FILE (the JSON key of a service account "
            "the sheet is shared with) or set GOOGLE_APPLICATION_CREDENTIALS"
        )
    try:
        return gspread.service_account(filename=str(path), scopes=SCOPES, http_client=gspread.BackOffHTTPClient)
    except FileNotFoundError:
        raise SheetsError(f"credentials file {path} does not exist") from None
    except (ValueError, KeyError) as exc:
        # google-auth names the missing field; never echo the file's content (it holds the private key).
        raise SheetsError(
            f"credentials file {path} is not a service-account key: {type(exc).__name__}: {exc}"
        ) from None


def fetch_rows(client: Any, key: str, worksheet: str) -> list[list[str]]:
    """All formatted values of one worksheet, as ragged rows of strings.

    Raises:
        SheetsError: spreadsheet or worksheet missing, access refused, or the API failing after retries.
    """
    import requests
    from gspread.exceptions import APIError, SpreadsheetNotFound, WorksheetNotFound

    try:
        spreadsheet = client.open_by_key(key)
        try:
            sheet = spreadsheet.worksheet(worksheet)
        except WorksheetNotFound:
            titles = ", ".join(repr(w.title) for w in spreadsheet.worksheets())
            raise SheetsError(f"spreadsheet {key} has no worksheet {worksheet!r} (worksheets: {titles})") from None
        values = sheet.get_values(pad_values=False)
    except SpreadsheetNotFound:
        raise SheetsError(
            f"spreadsheet {key} not found: check the id and share the sheet with the service account's email"
        ) from None
    except APIError as exc:
        code = getattr(exc, "code", None)
        if code in (401, 403):
            raise SheetsError(
                f"Google refused access to spreadsheet {key} (HTTP {code}): share the sheet with the service "
                f"account's email and enable the Sheets API for its project"
            ) from None
        if code == 404:
            raise SheetsError(f"spreadsheet {key} not found (HTTP 404): check the id") from None
        raise SheetsError(
            f"Google Sheets API error on spreadsheet {key}: HTTP {code}: {exc.error.get('message', '')}"
        ) from None
    except requests.RequestException as exc:
        raise SheetsError(f"cannot reach the Google Sheets API: {type(exc).__name__}") from None
    return [[("" if v is None else str(v)) for v in row] for row in values]
