"""Custom sources: records the user brings by file import, through the HTTP API or by hand.

The four custom kinds differ only in how a source was first made (``csv`` by a file import, ``custom``
by a manual entry, ``api`` by ``POST /v1/data_sources``, ``google_sheets`` by a sheet import,
``connectors.files.sheets``); each takes files and API writes alike. Their settings are free-form.
"""

from __future__ import annotations

from connectors.base import Feed, SourceKind


class CustomSource(SourceKind):
    """A source fed by hand (``funnelsync customers add``), by files and through the API."""

    kind = "custom"
    title = "Custom"
    feeds = frozenset({Feed.FILE, Feed.API})


class CsvSource(CustomSource):
    """A source first made by a CSV import."""

    kind = "csv"
    title = "CSV file"
    system_name = "Custom"


class ApiSource(CustomSource):
    """A source made through the import API (``POST /v1/data_sources``)."""

    kind = "api"
    title = "Import API"
    system_name = "Custom"
