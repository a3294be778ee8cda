"""Google Play's Daily Sales Report (``sales/salesreport_YYYYMM.zip`` from the Play Console bucket), pure.

It is the only source of Google Play lead records. ``read_sales_report`` reads the zip
(or its CSV) by header name; ``sales_orders`` folds the rows per subscription: the order number without
its renewal suffix (``GPA.1234-5678-9012-34567..2`` is the third renewal of ``GPA.1234-5678-9012-34567``)
is the subscription and its customer. A $0 subscription charge is a free-trial start; the first charge
above zero (not refunded) is the first payment; the lead date is the earlier of the two (the first
transaction). Rows of other product types (in-app products) are not subscriptions and are skipped.

The estimated sales report lists charged and refunded transactions, so a free trial, which charges
nothing, usually has no row of its own: Google numbers a subscription's orders ``GPA.…`` (the sign-up)
then ``GPA.……..0``, ``..1`` (its recurrences), and a subscription that began with a free trial shows
up first as its ``..0`` order, charged when the trial ended, carrying the trial offer's ``Offer ID``.
Such a subscription (a ``..0`` charge, no charged sign-up order) whose offer names a free trial with its
length (``freetrial-7d``, ``trial-1w``, ``free-trial-1m``, ``trial-P14D``) started its trial that long
before the charge: that is its trial start and its lead date.
"""

from __future__ import annotations

import calendar
import csv
import io
import re
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from funnelsync.normalize import clean_text
from funnelsync.records import SourceCustomerRecord, SubscriptionFact
from funnelsync.timeutil import from_epoch


class SalesReportError(ValueError):
    """A sales report that cannot be read (not a zip/CSV, or required columns missing)."""


# Our name → the header names Google has used for it (compared without case, spaces or punctuation).
COLUMNS: dict[str, tuple[str, ...]] = {
    "order": ("Order Number",),
    "charged_date": ("Order Charged Date",),
    "charged_ts": ("Order Charged Timestamp",),
    "status": ("Financial Status",),
    "product_type": ("Product Type",),
    "product_id": ("Product ID", "Package ID"),
    "sku": ("SKU ID",),
    "item_price": ("Item Price",),
    "charged_amount": ("Charged Amount",),
    "currency": ("Currency of Sale",),
    "city": ("City of Buyer",),
    "state": ("State of Buyer",),
    "zip": ("Postal Code of Buyer",),
    "country": ("Country of Buyer",),
    "base_plan": ("Base Plan ID", "Base Plan or Purchase Option ID"),
    "offer": ("Offer ID",),
}


REQUIRED = ("order", "status", "product_type")


def _norm(header: str) -> str:
    return re.sub(r"[^a-z0-9]", "", header.lower())


@dataclass(frozen=True, slots=True)
class SaleRow:
    """One row of a sales report, typed."""

    line: int
    order: str
    charged_at: datetime
    status: str
    product_type: str
    amount: float
    sku: str | None = None
    country: str | None = None
    state: str | None = None
    city: str | None = None
    zip: str | None = None
    offer: str | None = None


@dataclass
class SalesReportResult:
    """What a report holds: its rows and the rows skipped, with why (line, reason)."""

    rows: list[SaleRow] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)


def _amount(text: str | None) -> float | None:
    value = (text or "").strip().replace("\u00a0", "").replace(" ", "")
    if not value:
        return None
    if "," in value and "." in value:
        value = value.replace(",", "")  # 1,234.56
    elif "," in value:
        value = value.replace(",", ".")  # 4,99
    return float(value)


def _csv_text(data: bytes, name: str) -> str:
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [m for m in archive.namelist() if m.lower().endswith(".csv")]
            if not members:
                raise SalesReportError(f"{name}: the zip holds no .csv file")
            data = archive.read(members[0])
    # Sales reports are UTF-8 (statistics exports are UTF-16, and a user may hand one in by mistake).
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SalesReportError(f"{name}: not UTF-8 text (is it the sales report CSV or its zip?)") from None


def read_sales_report(source: Path | bytes, name: str | None = None) -> SalesReportResult:
    """All rows of a report in a list (see ``iter_sales_report``)."""
    result = SalesReportResult()
    result.rows.extend(iter_sales_report(source, result.skipped, name))
    return result


def iter_sales_report(
    source: Path | bytes, skipped: list[tuple[int, str]], name: str | None = None
) -> Iterator[SaleRow]:
    """Yield the rows of a Daily Sales Report (the ``salesreport_YYYYMM.zip`` or the CSV inside it) by header name.

    Header drift between months is tolerated: columns are found by name (case, spaces and punctuation
    ignored; ``Product ID``/``Package ID`` and ``Base Plan ID``/``Base Plan or Purchase Option ID``
    both known), unknown columns are ignored. A row that cannot be read is skipped with its reason.

    Raises:
        SalesReportError: unreadable file, or a required column (order number, charge time, financial
            status, product type, an amount) missing.
    """
    label = name or (str(source) if isinstance(source, Path) else "sales report")
    data = source.read_bytes() if isinstance(source, Path) else source
    try:
        text = _csv_text(data, label)
    except zipfile.BadZipFile:
        raise SalesReportError(f"{label}: not a valid zip file") from None
    # Lines with their endings (quoted multi-line fields survive) instead of a StringIO, which would
    # hold a second, four-bytes-a-character copy of the whole month.
    reader = csv.reader(text.splitlines(keepends=True))
    del text
    header = next(reader, None)
    if not header:
        raise SalesReportError(f"{label}: empty file")
    positions = {_norm(h): i for i, h in enumerate(header)}
    index: dict[str, int] = {}
    for key, names in COLUMNS.items():
        for candidate in names:
            if _norm(candidate) in positions:
                index[key] = positions[_norm(candidate)]
                break
    missing = [COLUMNS[k][0] for k in REQUIRED if k not in index]
    if "charged_ts" not in index and "charged_date" not in index:
        missing.append("Order Charged Timestamp (or Order Charged Date)")
    if "charged_amount" not in index and "item_price" not in index:
        missing.append("Charged Amount (or Item Price)")
    if missing:
        raise SalesReportError(
            f"{label}: required column(s) missing: {', '.join(missing)}; found: {', '.join(h for h in header if h)}"
        )
    return _sale_rows(reader, index, skipped)


def _sale_rows(reader: Iterator[list[str]], index: dict[str, int], skipped: list[tuple[int, str]]) -> Iterator[SaleRow]:
    for line, values in enumerate(reader, 2):
        if not any(v.strip() for v in values):
            continue

        def cell(key: str, values: list[str] = values) -> str | None:
            i = index.get(key)
            return clean_text(values[i]) if i is not None and i < len(values) else None

        try:
            order = cell("order")
            if not order:
                raise ValueError("no order number")
            stamp = cell("charged_ts")
            if stamp:
                try:
                    charged_at = from_epoch(int(float(stamp)))
                except (ValueError, OverflowError):
                    raise ValueError(f"charged timestamp {stamp!r} is not epoch seconds") from None
            else:
                charged = cell("charged_date")
                if not charged:
                    raise ValueError("no charged date (and no charged timestamp)")
                try:
                    day = date.fromisoformat(charged)
                except ValueError:
                    raise ValueError(f"charged date {charged!r} is not a YYYY-MM-DD date") from None
                charged_at = datetime(day.year, day.month, day.day, tzinfo=UTC)  # reports are UTC days
            amount = _amount(cell("charged_amount"))
            if amount is None:
                amount = _amount(cell("item_price"))
            country = cell("country")
            yield (
                SaleRow(
                    line=line,
                    order=order,
                    charged_at=charged_at,  # type: ignore[arg-type]
                    status=(cell("status") or "").lower(),
                    product_type=(cell("product_type") or "").lower(),
                    amount=amount or 0.0,
                    sku=cell("sku"),
                    country=country.upper() if country and len(country) == 2 and country.isalpha() else None,
                    state=cell("state"),
                    city=cell("city"),
                    zip=cell("zip"),
                    offer=cell("offer"),
                )
            )
        except (ValueError, OverflowError) as exc:
            skipped.append((line, f"unreadable row: {exc}"))


def base_order(order: str) -> str:
    """The subscription's first order number: ``GPA.1234-5678-9012-34567..2`` → ``GPA.1234-5678-9012-34567``."""
    return order.split("..", 1)[0]


def recurrence(order: str) -> int | None:
    """The recurrence number of an order (``..0`` is the first charge after the sign-up), None for the sign-up."""
    _, sep, suffix = order.partition("..")
    return int(suffix) if sep and suffix.isdigit() else None


# A free-trial offer id naming its length: ``freetrial-7d``, ``trial_2w``, ``free-trial-1m``, ``trial-P14D``.
_TRIAL_LENGTH = re.compile(r"(?<![a-z0-9])p?(\d{1,3})\s*([dwm])(?![a-z])", re.IGNORECASE)


def offer_trial_length(offer: str | None) -> tuple[int, str] | None:
    """The length of the free trial an offer id names, as (count, ``d``/``w``/``m``), if it names one."""
    if not offer or not re.search(r"trial", offer, re.IGNORECASE):
        return None
    match = _TRIAL_LENGTH.search(offer)
    if match is None or not int(match.group(1)):
        return None
    return int(match.group(1)), match.group(2).lower()


def trial_start_before(charged: datetime, length: tuple[int, str]) -> datetime:
    """The moment ``length`` before ``charged`` (months are calendar months, clamped to the month's end)."""
    count, unit = length
    if unit != "m":
        return charged - timedelta(days=count * (7 if unit == "w" else 1))
    month_index = charged.year * 12 + charged.month - 1 - count
    year, month = divmod(month_index, 12)
    day = min(charged.day, calendar.monthrange(year, month + 1)[1])
    return charged.replace(year=year, month=month + 1, day=day)


def _refunded(status: str) -> bool:
    return "refund" in status or "chargeback" in status or "cancel" in status


@dataclass(slots=True)
class OrderFacts:
    """What the report says about one subscription (= one Play customer)."""

    order: str
    trial_started_at: datetime | None = None
    first_paid_at: datetime | None = None
    first_seen_at: datetime | None = None
    sku: str | None = None
    country: str | None = None
    state: str | None = None
    city: str | None = None
    zip: str | None = None
    signup_charged: bool = False
    first_recurrence_at: datetime | None = None
    first_recurrence_offer: str | None = None

    @property
    def lead_created_at(self) -> datetime | None:
        """The first transaction: the trial start or the first payment, whichever came first."""
        dates = [d for d in (self.trial_started_at, self.first_paid_at) if d is not None]
        return min(dates) if dates else None


def sales_orders(rows: Iterable[SaleRow], skipped: list[tuple[int, str]] | None = None) -> dict[str, OrderFacts]:
    """Fold report rows into one ``OrderFacts`` per subscription (renewals joined to their first order)."""
    orders: dict[str, OrderFacts] = {}
    for row in rows:
        if row.product_type and row.product_type != "subscription":
            if skipped is not None:
                skipped.append((row.line, f"product type {row.product_type!r} is not a subscription"))
            continue
        facts = orders.setdefault(base_order(row.order), OrderFacts(base_order(row.order)))
        for attr in ("sku", "country", "state", "city", "zip"):
            if getattr(facts, attr) is None and getattr(row, attr):
                setattr(facts, attr, getattr(row, attr))
        if facts.first_seen_at is None or row.charged_at < facts.first_seen_at:
            facts.first_seen_at = row.charged_at
        if _refunded(row.status):
            continue
        if row.amount == 0:
            if facts.trial_started_at is None or row.charged_at < facts.trial_started_at:
                facts.trial_started_at = row.charged_at
        elif row.amount > 0 and (facts.first_paid_at is None or row.charged_at < facts.first_paid_at):
            facts.first_paid_at = row.charged_at
        if row.amount > 0:
            number = recurrence(row.order)
            if number is None:
                facts.signup_charged = True
            elif number == 0:
                facts.first_recurrence_at, facts.first_recurrence_offer = row.charged_at, row.offer
    for facts in orders.values():
        # A free trial charges nothing, so its sign-up has no row: it ran from its length before the ..0 charge.
        length = offer_trial_length(facts.first_recurrence_offer)
        if facts.trial_started_at is None and not facts.signup_charged and facts.first_recurrence_at and length:
            facts.trial_started_at = trial_start_before(facts.first_recurrence_at, length)
    return orders


def _earliest(*values: datetime | None) -> datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def order_record(
    facts: OrderFacts, stored: Mapping[str, Any] | None = None, stored_sub: Mapping[str, Any] | None = None
) -> SourceCustomerRecord | None:
    """The record of one subscription, merged with what earlier reports stored (earliest dates win).

    Returns None for a subscription with neither a trial start nor a payment in any report (only
    refunds so far): no lead record from those.
    """
    stored = stored or {}
    stored_sub = stored_sub or {}
    trial = _earliest(facts.trial_started_at, stored_sub.get("trial_started_at"))
    paid = _earliest(facts.first_paid_at, stored_sub.get("first_paid_at"))
    lead = _earliest(trial, paid, stored.get("lead_created_at"))
    if lead is None:
        return None
    state = "active" if paid is not None else "trialing"
    return SourceCustomerRecord(
        external_id=facts.order,
        name=stored.get("name") or facts.order,
        # The buyer's location as first stored wins: re-importing an older month never flips it.
        country=stored.get("country") or facts.country,
        state=stored.get("state") or facts.state,
        city=stored.get("city") or facts.city,
        zip=stored.get("zip") or facts.zip,
        lead_created_at=lead,
        free_trial_started_at=trial,
        subscriptions=[SubscriptionFact(facts.order, state, trial_started_at=trial, first_paid_at=paid)],
        custom={**(stored.get("custom") or {}), **({"google_play_sku": facts.sku} if facts.sku else {})},
    )


def iter_chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (batched writes)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
