"""What reading a file yields: a row's record or its errors, a row's digest, and the refusal of a whole file."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from funnelsync.records import SourceCustomerRecord, compact_pickle


class FileUnreadable(Exception):
    """The file cannot be imported at all (nothing is written): encoding, layout or mapping problem."""


# Longest rejected value quoted in full in reports (longer ones are cut, with their length).
REJECTED_VALUE_LIMIT = 200


@dataclass(slots=True)
class RowError:
    """One reason a row was rejected: spreadsheet row number, column header, raw value, reason."""

    row: int
    column: str
    value: str
    reason: str

    def __post_init__(self) -> None:
        # A pasted paragraph or a runaway quoted cell must not be copied whole into every report and
        # stored rejection: the row number finds it in the file.
        if len(self.value) > REJECTED_VALUE_LIMIT:
            self.value = f"{self.value[:REJECTED_VALUE_LIMIT]}… ({len(self.value):,} characters)"

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``--json`` output."""
        return {"row": self.row, "column": self.column, "value": self.value, "reason": self.reason}


@compact_pickle
@dataclass(slots=True)
class RowResult:
    """A mapped row: a record to upsert, or the errors that reject it."""

    row: int
    record: SourceCustomerRecord | None
    errors: list[RowError]
    keyed_by_email: bool = False
    raw: list[str] | None = None
    # ``RowDigest`` of a row keyed by its external id (a re-import compares it with the stored one).
    row_fingerprint: str | None = None
    # Skipped by ``FlexibleCsvFile.rows(unchanged=…)``: the source holds this row as it is (no record).
    unchanged: bool = False


# Part of every row digest: raise it when a change to the reading rules (dates, converters) must make
# re-imports read every row again instead of trusting digests stored by an older version.
ROW_RULES_VERSION = 1


class RowDigest:
    """The digest of a row's values under a signature (headers, mapping, date orders, time zone).

    Equal digests mean the row reads into the same record. ``loose`` leaves out what reading ignores
    (trailing empty cells, spaces around values): Google Sheets drops a row's trailing empty cells. A
    file row is digested as it is, in about half the time; a row changed only in spaces is read again and
    found unchanged.
    """

    def __init__(self, signature: bytes, loose: bool = False) -> None:
        self._base = hashlib.blake2b(signature, digest_size=16)
        self._loose = loose

    def __call__(self, values: list[str]) -> str:
        if self._loose:
            trimmed = list(values)
            while trimmed and not trimmed[-1].strip():
                trimmed.pop()
            values = [v.strip() for v in trimmed]
        digest = self._base.copy()
        digest.update("\x1f".join(values).encode("utf-8", "surrogatepass"))
        return digest.hexdigest()
