"""Dates in customer files (docs/importing.md, "Flexible CSV").

Accepted values:
- ISO 8601 with or without time and offset: ``2024-03-05``, ``2024-03-05T14:30:00Z``,
  ``2024-03-05T14:30:00.250+02:00``, ``2024-03-05 14:30`` and ``2024-03-05 14:30:15``;
- ``MM/DD/YYYY`` and ``DD/MM/YYYY``, each optionally followed by ``HH:MM[:SS]`` (and ``AM``/``PM``,
  as US spreadsheets export them);
- epoch seconds or milliseconds (digits only; 12 digits or more are milliseconds);
- any of the first two followed by `` UTC`` or `` GMT`` (``2024-03-05 14:30:00 UTC``, as Stripe exports
  write it): the clock is read in UTC whatever the account zone.

Whether a column of slashed dates is day-first or month-first is decided from ALL of its values: a
value whose first part is above 12 proves day-first, one whose second part is above 12 proves
month-first. A column with proof for neither order (every value like ``03/04/2024``), or with proof
for both, cannot be decided and the file is refused with a request for ``--date-format``. A single
value that fits neither order (``31/31/2024``, or ``02/30/2024`` in a month-first column) is an error
of its row only.

A value without a zone (date-only or date-time) is read in the account time zone; a date-only value is
midnight there. Every parser returns an aware UTC datetime.

Per-row work is kept small: the shape of a value is told by one or two character tests, ISO values go
to ``datetime.fromisoformat`` (C code), and each column parser caches its recent results because
date-only columns repeat the same few thousand values.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo

UTC = timezone.utc
DAY_FIRST = "DD/MM/YYYY"
MONTH_FIRST = "MM/DD/YYYY"
_ORDER_ALIASES = {
    "dd/mm/yyyy": DAY_FIRST, "dmy": DAY_FIRST, "day-first": DAY_FIRST, "dayfirst": DAY_FIRST,
    "mm/dd/yyyy": MONTH_FIRST, "mdy": MONTH_FIRST, "month-first": MONTH_FIRST, "monthfirst": MONTH_FIRST,
}
_CACHE_LIMIT = 50_000
_MS_DIGITS = 12  # 1e11 seconds is the year 5138, 1e11 milliseconds is 1973: 12+ digits are milliseconds
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A date-time ending in a zone abbreviation other than those: " CET", " EST", " PDT".
_ZONE_ABBREVIATION = re.compile(r"\d\s+([A-Za-z]{2,5})$")
_UTC_NAMES = ("UTC", "GMT")  # zone names a value may end with (" UTC"); other names are refused, not guessed
ACCEPTED = ("YYYY-MM-DD[THH:MM[:SS][±HH:MM|Z| UTC]], MM/DD/YYYY or DD/MM/YYYY [HH:MM[:SS]][ UTC], or epoch "
            "seconds/milliseconds")


class AmbiguousDateColumn(ValueError):
    """A column of slashed dates whose day/month order cannot be decided from its values.

    ``conflicting`` is True when values prove both orders, False when none proves either.
    """

    def __init__(self, message: str, conflicting: bool = False) -> None:
        super().__init__(message)
        self.conflicting = conflicting


def parse_date_format(text: str | None) -> str | None:
    """Normalise a ``--date-format`` value: ``DD/MM/YYYY``, ``MM/DD/YYYY`` or a strptime pattern.

    Raises:
        ValueError: for anything else.
    """
    if text is None or not text.strip():
        return None
    value = text.strip()
    order = _ORDER_ALIASES.get(value.lower())
    if order:
        return order
    if "%" in value:
        try:
            # strftime passes an unknown directive through ('%Q' stays '%Q'), so only a round trip through
            # strptime proves the pattern can parse anything; without it every date of the column was rejected.
            sample = datetime(2024, 1, 31, 13, 45, 30, tzinfo=UTC)
            datetime.strptime(sample.strftime(value), value)
        except ValueError as exc:
            raise ValueError(f"--date-format {text!r} is not a valid strptime pattern: {exc}") from None
        return value
    raise ValueError(
        f"--date-format {text!r}: use DD/MM/YYYY, MM/DD/YYYY or a strptime pattern such as %d.%m.%Y"
    )


def _split_slashed(value: str) -> tuple[int, int, int] | None:
    """The three numbers of a slashed date, or None when the value is not one."""
    head = value.split(" ", 1)[0]
    parts = head.split("/")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


_DAYS_IN_MONTH = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_real_date(year: int, month: int, day: int) -> bool:
    if not 1 <= month <= 12 or not 1 <= day <= _DAYS_IN_MONTH[month]:
        return False
    return not (month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)))


@dataclass(slots=True)
class SlashedDateSurvey:
    """Evidence, gathered over every value of one column, for its day/month order."""

    column: str
    day_first_row: int | None = None
    day_first_value: str = ""
    month_first_row: int | None = None
    month_first_value: str = ""
    ambiguous_row: int | None = None
    ambiguous_value: str = ""
    slashed: int = 0
    _seen: set[str] = field(default_factory=set)

    def observe(self, value: str, row_number: int) -> None:
        """Look at one raw cell (cheap unless it contains a slash; a value seen before costs a set lookup)."""
        if "/" not in value:
            return
        seen = self._seen
        if value in seen:
            return
        if len(seen) < _CACHE_LIMIT:
            seen.add(value)  # date columns repeat a few thousand values over a million rows
        parts = _split_slashed(value.strip())
        if parts is None:
            return
        self.slashed += 1
        first, second, year = parts
        # A value is evidence for an order only when it is a real date in that order and not in the
        # other: "02/30/2024" proves nothing (it is no date at all) and becomes an error of its row.
        day_first = _is_real_date(year, second, first)
        month_first = _is_real_date(year, first, second)
        if day_first and not month_first:
            if self.day_first_row is None:
                self.day_first_row, self.day_first_value = row_number, value
        elif month_first and not day_first:
            if self.month_first_row is None:
                self.month_first_row, self.month_first_value = row_number, value
        elif day_first and first != second and self.ambiguous_row is None:
            self.ambiguous_row, self.ambiguous_value = row_number, value

    def decide(self) -> str | None:
        """The column's order: DAY_FIRST, MONTH_FIRST, or None when no value needs one.

        Raises:
            AmbiguousDateColumn: no value proves either order, or values prove both.
        """
        if self.day_first_row is not None and self.month_first_row is not None:
            raise AmbiguousDateColumn(
                f"column {self.column!r} mixes day-first dates (row {self.day_first_row}: "
                f"{self.day_first_value!r}) and month-first dates (row {self.month_first_row}: "
                f"{self.month_first_value!r}): pass --date-format DD/MM/YYYY or --date-format MM/DD/YYYY "
                f"(rows that do not fit it are then rejected)",
                conflicting=True,
            )
        if self.day_first_row is not None:
            return DAY_FIRST
        if self.month_first_row is not None:
            return MONTH_FIRST
        if self.ambiguous_row is not None:
            raise AmbiguousDateColumn(
                f"column {self.column!r} has dates such as {self.ambiguous_value!r} (row {self.ambiguous_row}) "
                f"that read both as day-first and as month-first, and no value decides which: pass "
                f"--date-format DD/MM/YYYY or --date-format MM/DD/YYYY"
            )
        return None


@dataclass(slots=True)
class DateColumnParser:
    """Parses one column's values; built once per column with its decided order and the account zone."""

    column: str
    order: str | None
    tz: tzinfo
    pattern: str | None = None
    _cache: dict[str, datetime] = field(default_factory=dict)

    def __call__(self, value: str) -> datetime:
        """Parse one stripped, non-empty cell.

        Raises:
            ValueError: with a reason fit for the rejected-rows report.
        """
        cached = self._cache.get(value)
        if cached is not None:
            return cached
        try:
            parsed = self._parse(value)
        except OverflowError:
            # A 20-digit "epoch", or 0001-01-01 moved to UTC from a zone east of it: a bad cell, not a crash.
            raise ValueError("outside the dates a timestamp can hold (years 1 to 9999)") from None
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[value] = parsed
        return parsed

    def _local(self, naive: datetime, zone: tzinfo | None = None) -> datetime:
        zone = zone or self.tz
        if zone is UTC:
            return naive.replace(tzinfo=UTC)
        # fold=0: an ambiguous wall time (DST fall-back) is read as the first occurrence.
        return naive.replace(tzinfo=zone).astimezone(UTC)

    def _parse(self, value: str) -> datetime:
        if len(value) > 4 and value[-4] == " " and value[-3:].upper() in _UTC_NAMES:
            # "2024-03-05 14:30:00 UTC", as Stripe's and many databases' exports write it.
            return self._in_utc(value[:-4].rstrip())
        abbreviation = _ZONE_ABBREVIATION.search(value) if self.pattern is None else None
        if abbreviation is not None and abbreviation.group(1).upper() not in ("AM", "PM"):
            name = abbreviation.group(1)
            raise ValueError(
                f"the time zone name {name!r} is not supported: zone abbreviations are ambiguous (CST is "
                "three zones), so they are refused rather than guessed; write an offset instead, in ISO 8601 "
                "(2025-03-05T14:30+01:00), or the time in UTC (2025-03-05 13:30 UTC)"
            )
        if self.pattern is not None:
            try:
                parsed = datetime.strptime(value, self.pattern)
            except ValueError:
                pass
            else:
                return parsed.astimezone(UTC) if parsed.tzinfo else self._local(parsed)
        if len(value) >= 10 and value[4] == "-":
            return self._iso(value)
        if "/" in value:
            return self._slashed(value)
        if value.isdigit():
            return self._epoch(value)
        if value[:1] == "-" and value[1:].isdigit():
            raise ValueError("a negative epoch timestamp is not a plausible date")
        raise ValueError(f"not a date: use {ACCEPTED}")

    def _iso(self, value: str, zone: tzinfo | None = None) -> datetime:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not a valid ISO 8601 date or date-time (expected {ACCEPTED})") from None
        if parsed.tzinfo is None:
            return self._local(parsed, zone)
        if zone is not None:
            raise ValueError("two time zones: an offset and a zone name; keep one")
        return parsed.astimezone(UTC)

    def _in_utc(self, value: str) -> datetime:
        """A value written with a UTC zone name: ISO or slashed, the clock read in UTC."""
        if len(value) >= 10 and value[4] == "-":
            return self._iso(value, UTC)
        if "/" in value:
            return self._slashed(value, UTC)
        raise ValueError(f"not a date: use {ACCEPTED}")

    def _epoch(self, value: str) -> datetime:
        number = int(value)
        if len(value) >= _MS_DIGITS:
            return _EPOCH + timedelta(milliseconds=number)
        if len(value) < 9:
            # 8 digits or fewer is before March 1973 as epoch seconds: far likelier a typo or a YYYYMMDD.
            raise ValueError("too short for an epoch timestamp (seconds have 9–10 digits, milliseconds 12–13)")
        return _EPOCH + timedelta(seconds=number)

    def _slashed(self, value: str, zone: tzinfo | None = None) -> datetime:
        date_part, _, time_part = value.partition(" ")
        parts = date_part.split("/")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"not a date: use {ACCEPTED}")
        first, second, year = (int(p) for p in parts)
        if len(parts[2]) != 4:
            raise ValueError("the year must have four digits (MM/DD/YYYY or DD/MM/YYYY)")
        order = self.order
        if order is None:
            # The column survey found no value needing an order: this one is unambiguous or day == month.
            if first <= 12 and second <= 12 and first != second:
                raise ValueError(
                    f"{value!r} reads both as day-first and as month-first: pass --date-format DD/MM/YYYY "
                    f"or MM/DD/YYYY"
                )
            order = DAY_FIRST if first > 12 else MONTH_FIRST
        day, month = (first, second) if order == DAY_FIRST else (second, first)
        if month > 12 or month < 1:
            raise ValueError(
                f"{month} is not a month: column {self.column!r} reads {order}"
                + (" (use --date-format to choose)" if self.order is None else "")
            )
        hour = minute = second_ = 0
        if time_part:
            hour, minute, second_ = _parse_clock(time_part.strip())
        try:
            naive = datetime(year, month, day, hour, minute, second_)
        except ValueError as exc:
            raise ValueError(f"not a real date when read as {order}: {exc}") from None
        return self._local(naive, zone)


def _parse_clock(text: str) -> tuple[int, int, int]:
    """``HH:MM[:SS]`` with an optional ``AM``/``PM`` suffix."""
    meridiem = None
    upper = text.upper()
    if upper.endswith(("AM", "PM")):
        meridiem = upper[-2:]
        text = text[:-2].strip()
    pieces = text.split(":")
    if len(pieces) not in (2, 3) or not all(p.isdigit() and len(p) <= 2 for p in pieces):
        raise ValueError("the time must be HH:MM or HH:MM:SS")
    hour, minute = int(pieces[0]), int(pieces[1])
    second = int(pieces[2]) if len(pieces) == 3 else 0
    if meridiem:
        if not 1 <= hour <= 12:
            raise ValueError("a 12-hour time needs an hour from 1 to 12")
        hour = hour % 12 + (12 if meridiem == "PM" else 0)
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError("the time is out of range (HH 0–23, MM and SS 0–59)")
    return hour, minute, second


def make_date_parser(
    column: str,
    survey: SlashedDateSurvey | None,
    tz: tzinfo,
    date_format: str | None = None,
    known_order: str | None = None,
) -> Callable[[str], datetime]:
    """Build the parser of one date column.

    Args:
        column: the header, for messages.
        survey: the column's evidence (None when a ``--date-format`` order makes it moot).
        tz: the account time zone for values without a zone.
        date_format: a normalised ``--date-format`` (see ``parse_date_format``): an order overrides the
            survey; a strptime pattern is tried first on every value.

    Raises:
        AmbiguousDateColumn: when the survey cannot decide and no format is given.
    """
    pattern = date_format if date_format and "%" in date_format else None
    order: str | None
    if date_format in (DAY_FIRST, MONTH_FIRST):
        order = date_format
    elif pattern is not None:
        order = None
        if survey is not None:
            try:
                order = survey.decide()
            except AmbiguousDateColumn:
                order = None  # the pattern handles the column; stray slashed values fail per row
    else:
        try:
            order = survey.decide() if survey is not None else None
        except AmbiguousDateColumn as exc:
            if exc.conflicting or known_order not in (DAY_FIRST, MONTH_FIRST):
                raise
            order = known_order
    return DateColumnParser(column=column, order=order, tz=tz, pattern=pattern)
