"""Pure tests of the flexible-file parser: header matching, dates, encodings, delimiters, rejected rows."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connectors.files.dates import (
    DAY_FIRST,
    MONTH_FIRST,
    AmbiguousDateColumn,
    SlashedDateSurvey,
    make_date_parser,
    parse_date_format,
)
from connectors.files.dialect import sniff_delimiter
from connectors.files.flexible_csv import FlexibleCsvFile
from connectors.files.headers import MappingError, match_headers, normalize_header, parse_map_options
from connectors.files.rows import FileUnreadable

UTC = timezone.utc


# --- header matching -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("external_id", "external_id"),
        ("External ID", "external_id"),
        ("EXTERNAL-ID", "external_id"),
        ("Customer ID", "external_id"),
        ("ID", "external_id"),
        ("uuid", "external_id"),
        ("Name", "name"),
        ("Full name", "name"),
        ("E-mail", "email"),
        ("Email Address", "email"),
        ("Company name", "company"),
        ("Organization", "company"),
        ("Zip code", "zip"),
        ("Postal Code", "zip"),
        ("Website", "website_url"),
        ("URL", "website_url"),
        ("Domain", "website_url"),
        ("Signup Date", "lead_created_at"),
        ("Created", "lead_created_at"),
        ("Lead Date", "lead_created_at"),
        ("lead_created_at", "lead_created_at"),
        ("Lead Created At", "lead_created_at"),
        ("Trial Start", "free_trial_started_at"),
        ("free trial started at", "free_trial_started_at"),
        ("Customer Since", "subscriber_since"),
        ("Canceled At", "cancelled_at"),
        ("Lead Owner", "owner"),
        ("Lead Status", "lead_status"),
        ("Tags", "tags"),
        ("First Name", "contact.first_name"),
        ("Phone", "contact.phone"),
        ("custom.plan", "custom.plan"),
        ("Country", "country"),
        ("Province", "state"),
    ],
)
def test_header_matches_field_or_synonym(header: str, field: str) -> None:
    match = match_headers([header])
    assert match.targets[0] is not None and match.targets[0].field == field


def test_unknown_headers_are_ignored_and_listed() -> None:
    match = match_headers(["Email", "Favourite colour", "Status", ""])
    assert [t.field if t else None for t in match.targets] == ["email", None, None, None]
    assert match.ignored == ["Favourite colour", "Status"]


def test_explicit_mapping_wins_and_supports_custom_types_and_ignore() -> None:
    mapping = parse_map_options(
        ["Signup=lead_created_at", "Seats=custom.seats:integer", "ID=ignore", "Ref=external_id"]
    )
    match = match_headers(["ID", "Signup", "Seats", "Ref", "Created"], mapping)
    fields = [(t.field, t.custom_type) if t else None for t in match.targets]
    # "Created" would match lead_created_at but --map chose "Signup" for it.
    assert fields == [None, ("lead_created_at", "string"), ("custom.seats", "integer"), ("external_id", "string"), None]
    assert "Created" in match.ignored


def test_explicit_mapping_finds_header_by_normalised_name() -> None:
    match = match_headers(["Sign-Up_Date"], {"sign up date": "lead_created_at"})
    assert match.targets[0] is not None and match.targets[0].field == "lead_created_at"


@pytest.mark.parametrize(
    ("headers", "mapping", "message"),
    [
        (["Email", "E-mail"], {}, "both match email"),
        (["Email"], {"Signup": "lead_created_at"}, "does not have"),
        (["Email", "X"], {"X": "favourite_colour"}, "unknown field"),
        (["Email", "X"], {"X": "custom.n:float"}, "custom attribute type"),
        (["Email", "X"], {"X": "contact.shoe_size"}, "contact fields"),
    ],
)
def test_mapping_errors(headers: list[str], mapping: dict[str, str], message: str) -> None:
    with pytest.raises(MappingError, match=message):
        match_headers(headers, mapping)


def test_normalize_header() -> None:
    assert normalize_header("\ufeff Lead_Created-At ") == "leadcreatedat"


# --- dates -----------------------------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("value", "order", "tz", "expected"),
    [
        ("2024-03-05", None, UTC, datetime(2024, 3, 5, tzinfo=UTC)),
        ("2024-03-05", None, BERLIN, datetime(2024, 3, 4, 23, tzinfo=UTC)),  # midnight in the account zone
        ("2024-07-05", None, BERLIN, datetime(2024, 7, 4, 22, tzinfo=UTC)),  # summer time
        ("2024-03-05T14:30:00Z", None, BERLIN, datetime(2024, 3, 5, 14, 30, tzinfo=UTC)),
        ("2024-03-05T14:30:00+02:00", None, UTC, datetime(2024, 3, 5, 12, 30, tzinfo=UTC)),
        ("2024-03-05T14:30:00.250-05:00", None, UTC, datetime(2024, 3, 5, 19, 30, 0, 250000, tzinfo=UTC)),
        ("2024-03-05T14:30", None, UTC, datetime(2024, 3, 5, 14, 30, tzinfo=UTC)),
        ("2024-03-05 14:30", None, UTC, datetime(2024, 3, 5, 14, 30, tzinfo=UTC)),
        ("2024-03-05 14:30:15", None, BERLIN, datetime(2024, 3, 5, 13, 30, 15, tzinfo=UTC)),
        ("03/05/2024", MONTH_FIRST, UTC, datetime(2024, 3, 5, tzinfo=UTC)),
        ("03/05/2024", DAY_FIRST, UTC, datetime(2024, 5, 3, tzinfo=UTC)),
        ("03/05/2024 14:30", DAY_FIRST, UTC, datetime(2024, 5, 3, 14, 30, tzinfo=UTC)),
        ("03/05/2024 14:30:59", MONTH_FIRST, UTC, datetime(2024, 3, 5, 14, 30, 59, tzinfo=UTC)),
        ("3/5/2024 2:30 PM", MONTH_FIRST, UTC, datetime(2024, 3, 5, 14, 30, tzinfo=UTC)),
        ("3/5/2024 12:05 AM", MONTH_FIRST, UTC, datetime(2024, 3, 5, 0, 5, tzinfo=UTC)),
        ("25/12/2024", None, UTC, datetime(2024, 12, 25, tzinfo=UTC)),  # unambiguous by itself
        ("1709649000", None, UTC, datetime(2024, 3, 5, 14, 30, tzinfo=UTC)),  # epoch seconds
        ("1709649000123", None, UTC, datetime(2024, 3, 5, 14, 30, 0, 123000, tzinfo=UTC)),  # epoch ms
        # A trailing UTC/GMT zone name (Stripe's exports) beats the account zone.
        ("2024-03-05 14:30:00 UTC", None, BERLIN, datetime(2024, 3, 5, 14, 30, tzinfo=UTC)),
        ("2024-03-05 utc", None, BERLIN, datetime(2024, 3, 5, tzinfo=UTC)),
        ("03/05/2024 14:30 GMT", MONTH_FIRST, BERLIN, datetime(2024, 3, 5, 14, 30, tzinfo=UTC)),
    ],
)
def test_date_formats(value: str, order: str | None, tz: ZoneInfo, expected: datetime) -> None:
    parser = make_date_parser("Signup", None, tz, order)
    parsed = parser(value)
    assert parsed == expected
    assert parsed.tzinfo is not None and parsed.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("value", "order", "reason"),
    [
        ("2024-02-30", None, "ISO 8601"),
        ("31/31/2024", DAY_FIRST, "not a month"),
        ("02/30/2024", MONTH_FIRST, "not a real date"),
        ("13/01/2024", MONTH_FIRST, "not a month"),
        ("05/03/24", MONTH_FIRST, "four digits"),
        ("03/05/2024 25:00", MONTH_FIRST, "out of range"),
        ("yesterday", None, "not a date"),
        ("12345", None, "too short"),
        ("03/04/2024", None, "both as day-first and as month-first"),
        ("2024-03-05T14:30:00+02:00 UTC", None, "two time zones"),
        # Other zone names are refused, not guessed, with the reason and the fix (docs/importing.md).
        ("2024-03-05 14:30 CET", None, r"time zone name 'CET' is not supported.*write an offset instead"),
        ("03/05/2024 09:00 EST", MONTH_FIRST, r"time zone name 'EST' is not supported.*2025-03-05T14:30\+01:00"),
        ("2024-03-05T14:30:00 pdt", None, "time zone name 'pdt' is not supported"),
        ("1709649000 UTC", None, "not a date"),
    ],
)
def test_bad_dates_give_a_reason(value: str, order: str | None, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        make_date_parser("Signup", None, UTC, order)(value)


def _survey(values: list[str]) -> SlashedDateSurvey:
    survey = SlashedDateSurvey("Signup")
    for number, value in enumerate(values, start=2):
        survey.observe(value, number)
    return survey


@pytest.mark.parametrize(
    ("values", "order"),
    [
        (["01/02/2024", "03/04/2024", "25/04/2024"], DAY_FIRST),  # the third value decides the column
        (["01/02/2024", "03/04/2024", "04/25/2024 10:00"], MONTH_FIRST),
        (["2024-01-02", "07/07/2024"], None),  # day == month needs no order
        (["2024-01-02", "1709649000"], None),
    ],
)
def test_column_order_decided_from_all_values(values: list[str], order: str | None) -> None:
    assert _survey(values).decide() == order


def test_undecidable_column_asks_for_date_format() -> None:
    with pytest.raises(AmbiguousDateColumn, match="--date-format"):
        _survey(["01/02/2024", "03/04/2024"]).decide()
    with pytest.raises(AmbiguousDateColumn, match="mixes"):
        _survey(["13/02/2024", "02/13/2024"]).decide()


def test_parse_date_format() -> None:
    assert parse_date_format("dd/mm/yyyy") == DAY_FIRST
    assert parse_date_format("MM/DD/YYYY") == MONTH_FIRST
    assert parse_date_format("%d.%m.%Y") == "%d.%m.%Y"
    with pytest.raises(ValueError):
        parse_date_format("YYYY.MM.DD")


def test_strptime_date_format() -> None:
    parser = make_date_parser("Signup", None, UTC, "%d.%m.%Y")
    assert parser("05.03.2024") == datetime(2024, 3, 5, tzinfo=UTC)
    assert parser("2024-03-06") == datetime(2024, 3, 6, tzinfo=UTC)  # ISO still accepted


# --- files -----------------------------------------------------------------------------------------

def _read(path: Path, **kwargs: object) -> tuple[FlexibleCsvFile, list]:  # type: ignore[type-arg]
    source = FlexibleCsvFile(path, tz=UTC, **kwargs)  # type: ignore[arg-type]
    source.prepare()
    return source, list(source.rows())


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("sample", "delimiter"),
    [
        ("a,b,c\n1,2,3\n", ","),
        ("a;b;c\n1;2,5;3\n", ";"),
        ("a\tb\tc\n1\t2\t3\n", "\t"),
        ('name,notes\n"Doe; Jane","a; b; c"\n', ","),
        ("email\nx@y.com\n", ","),
    ],
)
def test_sniff_delimiter(sample: str, delimiter: str) -> None:
    assert sniff_delimiter(sample) == delimiter


def test_bom_semicolons_crlf_decimal_commas(tmp_path: Path) -> None:
    text = "Customer ID;Name;E-mail;Signup Date;Seats\r\nc1;Zoë Ärger;zoe@example.com;25/03/2024;1,5\r\n"
    path = _write(tmp_path, "leads.csv", b"\xef\xbb\xbf" + text.encode("utf-8"))
    source, rows = _read(path, mapping={"Seats": "custom.seats"})
    assert source.layout is not None and source.layout.delimiter == ";"
    assert source.layout.encoding == "utf-8-sig"
    record = rows[0].record
    assert record.external_id == "c1" and record.name == "Zoë Ärger" and record.email == "zoe@example.com"
    assert record.lead_created_at == datetime(2024, 3, 25, tzinfo=UTC)
    assert record.custom == {"seats": "1,5"}


def test_tab_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "leads.tsv", b"id\temail\ttrial start\nA1\ta@example.com\t2024-01-02\n")
    _, rows = _read(path)
    assert rows[0].record.free_trial_started_at == datetime(2024, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize("encoding", ["cp1252", "latin-1"])
def test_windows_1252_and_latin1_files_are_detected(tmp_path: Path, encoding: str) -> None:
    text = "id;name;city;company\n1;José Müller;Zürich;Société Générale\n2;Françoise Çelik;Besançon;Ñandú SA\n"
    path = _write(tmp_path, "legacy.csv", text.encode(encoding))
    source, rows = _read(path)
    assert source.layout is not None and source.layout.encoding_note is not None
    assert [r.record.name for r in rows] == ["José Müller", "Françoise Çelik"]
    assert rows[1].record.company == "Ñandú SA"


def test_non_utf8_byte_after_the_first_megabyte(tmp_path: Path) -> None:
    body = "".join(f"id{i},user{i}@example.com,Plain Name\n" for i in range(40_000))
    data = ("id,email,name\n" + body).encode() + "late,late@example.com,Renée\n".encode("cp1252")
    path = _write(tmp_path, "late.csv", data)
    _, rows = _read(path)
    assert rows[-1].record.name == "Renée"


def test_undetectable_encoding_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = _write(tmp_path, "binary.csv", b"id,name\n1," + bytes(range(128, 256)) * 3 + b"\x00\x81\n")
    with pytest.raises(FileUnreadable, match="UTF-8"):
        FlexibleCsvFile(path, tz=UTC).prepare()


def test_quoted_newlines_blank_lines_trailing_columns_and_row_numbers(tmp_path: Path) -> None:
    text = (
        "ID,Name,Email,Notes,Signup Date,,\r\n"  # row 1; trailing empty header columns
        '1,"Doe, Jane",jane@example.com,"line one\r\nline two",2024-01-05,,\r\n'  # row 2 spans two lines
        "\r\n"  # row 3: blank
        "2,Bob,bob@example.com,,not a date,,\r\n"  # row 4: rejected
        ",No Key,,,,,\r\n"  # row 5: neither id nor email
        "4,Al,al@example,,2024-01-06,,\r\n"  # row 6: bad email
        ",Keyless,Keyless+x@Example.com,,2024-01-07,,\r\n"  # row 7: keyed by email
        "1,Jane again,jane2@example.com,,2024-01-08,,\r\n"  # row 8: duplicate id of row 2
    )
    path = _write(tmp_path, "messy.csv", text.encode())
    _, rows = _read(path)
    by_row = {r.row: r for r in rows}
    assert sorted(by_row) == [2, 4, 5, 6, 7, 8]
    assert by_row[2].record.name == "Doe, Jane"
    assert by_row[2].record.contacts[0].notes == "line one\r\nline two"
    assert by_row[4].errors[0].column == "Signup Date" and by_row[4].errors[0].value == "not a date"
    assert by_row[5].errors[0].reason.startswith("no external_id and no email")
    assert by_row[6].errors[0].column == "Email" and by_row[6].errors[0].reason == "not an email address"
    assert by_row[7].record.external_id == "email:keyless+x@example.com" and by_row[7].keyed_by_email
    assert "duplicate key: row 2" in by_row[8].errors[0].reason


def test_day_first_decided_by_a_late_row(tmp_path: Path) -> None:
    lines = ["id,signup date"] + [f"r{i},0{1 + i % 9}/0{1 + i % 8}/2024" for i in range(200)] + ["late,28/02/2024"]
    path = _write(tmp_path, "dates.csv", "\n".join(lines).encode())
    _, rows = _read(path)
    assert rows[1].record.lead_created_at == datetime(2024, 2, 2, tzinfo=UTC)  # "02/02" either way
    assert rows[2].record.lead_created_at == datetime(2024, 3, 3, tzinfo=UTC)
    assert rows[8].record.lead_created_at == datetime(2024, 1, 9, tzinfo=UTC)  # "09/01" day-first = 9 Jan
    assert rows[-1].record.lead_created_at == datetime(2024, 2, 28, tzinfo=UTC)


def test_undecidable_file_column_is_refused_and_date_format_decides(tmp_path: Path) -> None:
    path = _write(tmp_path, "dates.csv", b"id,signup date\na,01/02/2024\nb,03/04/2024\n")
    with pytest.raises(FileUnreadable, match="--date-format"):
        FlexibleCsvFile(path, tz=UTC).prepare()
    _, rows = _read(path, date_format=DAY_FIRST)
    assert rows[0].record.lead_created_at == datetime(2024, 2, 1, tzinfo=UTC)


def test_value_fitting_neither_order_rejects_only_its_row(tmp_path: Path) -> None:
    path = _write(tmp_path, "dates.csv", b"id,signup date\na,25/02/2024\nb,02/30/2024\nc,01/03/2024\n")
    _, rows = _read(path)
    assert rows[0].record is not None and rows[2].record is not None
    assert rows[1].record is None and rows[1].row == 3 and "not a month" in rows[1].errors[0].reason


def test_subscription_tags_custom_contact_columns(tmp_path: Path) -> None:
    text = (
        "id,email,tags,custom.plan,seats,customer since,canceled at,first name,lead status,country\n"
        'a,a@example.com,"vip, beta ,vip",Pro,3,2024-02-01,,Ann,working,germany\n'
        "b,b@example.com,,,,2024-02-01,2024-03-01,,,FR\n"
        "c,c@example.com,,,,,,,,\n"
    )
    path = _write(tmp_path, "full.csv", text.encode())
    _, rows = _read(path, mapping={"seats": "custom.seats:integer"})
    a, b, c = (r.record for r in rows)
    assert a.tags == ["vip", "beta"] and a.custom == {"plan": "Pro", "seats": 3}
    assert a.subscriptions[0].state == "active" and a.subscriptions[0].first_paid_at == datetime(2024, 2, 1, tzinfo=UTC)
    assert a.contacts[0].first_name == "Ann" and a.lead_status == "Working_Lead" and a.country == "DE"
    # Empty cells report nothing (the stored contact and subscription stay), unless asked to clear.
    assert b.subscriptions[0].state == "cancelled" and b.country == "FR" and b.contacts is None
    assert c.subscriptions is None
    assert b.present == {"email", "country", "subscription.first_paid_at", "subscription.cancelled_at"}
    assert a.present >= {"tags", "custom.plan", "custom.seats", "lead_status", "subscription.first_paid_at"}
    _, rows = _read(path, mapping={"seats": "custom.seats:integer"}, empty_cells="clear")
    a, b, c = (r.record for r in rows)
    assert b.contacts == [] and c.subscriptions == []
    assert c.present == {"email", "tags", "custom.plan", "custom.seats", "lead_status", "country",
                         "subscription.first_paid_at", "subscription.cancelled_at"}


def test_no_subscription_columns_leaves_subscriptions_alone(tmp_path: Path) -> None:
    path = _write(tmp_path, "plain.csv", b"id,email\na,a@example.com\n")
    _, rows = _read(path)
    assert rows[0].record.subscriptions is None and rows[0].record.contacts is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"name,company\nA,B\n", "map one to external_id or email"),
        (b"id,email\n", "no data rows"),
        (b'id,email\n1,"unterminated\n' + b"x" * (1 << 20) + b"\n", "row 2"),
    ],
)
def test_unreadable_files(tmp_path: Path, data: bytes, message: str) -> None:
    path = _write(tmp_path, "bad.csv", data)
    with pytest.raises(FileUnreadable, match=message):
        FlexibleCsvFile(path, tz=UTC).prepare()


def test_a_huge_rejected_value_is_quoted_cut_with_its_length(tmp_path: Path) -> None:
    """A runaway cell is reported by its start and size, not copied whole into every report."""
    huge = "x" * 50_000
    path = _write(tmp_path, "huge.csv", f"ID,Email,Signup Date\n1,{huge},2024-01-05\n".encode())
    _, rows = _read(path)
    (error,) = rows[0].errors
    assert error.column == "Email" and error.value.startswith("x" * 200)
    assert len(error.value) < 250 and error.value.endswith("(50,000 characters)")
