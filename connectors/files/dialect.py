"""A file's delimiter: the one (comma, semicolon or tab) whose header columns the rows repeat."""

from __future__ import annotations

import csv
import io

SNIFF_CHARS = 64 * 1024


DELIMITERS = (",", ";", "\t")


def sniff_delimiter(sample: str) -> str:
    """Pick comma, semicolon or tab: the one giving the header most columns that the rows repeat.

    ``csv.Sniffer`` is not used: it guesses from character frequencies and trips over commas inside
    quoted values and decimal commas; parsing with each candidate and checking consistency does not.
    """
    lines = sample.splitlines(keepends=True)
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        lines = lines[:-1]  # the sample may cut the last row
    text = "".join(lines[:200])
    best: tuple[float, int, str] = (0.0, 1, ",")
    for delimiter in DELIMITERS:
        try:
            rows = [r for r in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in r)]
        except csv.Error:
            continue
        if not rows:
            continue
        width = len(_trim_trailing_empty(rows[0]))
        if width < 2:
            continue
        body = rows[1:50] or rows[:1]
        consistent = sum(1 for r in body if len(_trim_trailing_empty(r)) <= width and len(r) >= width - 1)
        score = (consistent / len(body), width, delimiter)
        if score[:2] > best[:2]:
            best = score
    return best[2]


def _trim_trailing_empty(row: list[str]) -> list[str]:
    end = len(row)
    while end and not row[end - 1].strip():
        end -= 1
    return row[:end]
