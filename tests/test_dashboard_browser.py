"""The dashboard in a real browser: Debian's Chromium driven by Playwright against the app on a seeded database.

Nothing is downloaded at run time: Playwright's Python package drives the system's ``/usr/bin/chromium``
(``executable_path``); ``.ci/run`` installs it from Debian's packages when it is missing. Screenshots at
a desktop and a phone width go to the test's output folder (and into ``docs/img/`` with
``FUNNELSYNC_UPDATE_DOCS_IMG=1``, for docs/dashboard.md).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import uvicorn

from api.app import create_app
from funnelsync.records import SourceCustomerRecord
from storage.api_keys import create_api_key
from storage.projection import register_attribute_types
from storage.sources import create_source
from storage.upsert import upsert_records

CHROMIUM = os.environ.get("FUNNELSYNC_CHROMIUM", "/usr/bin/chromium")
DOCS_IMG = Path(__file__).resolve().parent.parent / "docs" / "img"
XSS_NAME = '<img src=x onerror="window.__xss=1">Mallory'
FORMULA_COMPANY = '=HYPERLINK("http://evil.example","open")'
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
# The flags Chromium needs as root on a machine with no outside network (no sandbox, no background calls).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _months_ago(n: int) -> datetime:
    today = datetime.now(UTC)
    index = today.year * 12 + today.month - 1 - n
    return datetime(index // 12, index % 12 + 1, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def server(sqlite_engine):
    """The app on a seeded SQLite database, served by uvicorn on a free local port; yields (url, key)."""
    people = [
        ("L-1", "Ada Lovelace", "ada@lovelace.example", "US", 1, True, ["vip"], 12),
        ("L-2", "Grace Hopper", "grace@hopper.example", "US", 2, True, [], 3),
        ("L-3", "Alan Turing", "alan@turing.example", "GB", 2, False, [], None),
        ("L-4", "Edsger Dijkstra", "edsger@dijkstra.example", "NL", 4, True, ["vip"], 40),
        ("L-5", "Barbara Liskov", "barbara@liskov.example", "US", 6, False, [], None),
        ("L-6", "Donald Knuth", "donald@knuth.example", "US", 6, True, ["vip"], 2),
        ("L-7", "Frances Allen", "frances@allen.example", "DE", 9, True, [], 7),
        ("L-8", XSS_NAME, "mallory@evil.example", "DE", 3, False, [], None),
    ]
    with sqlite_engine.begin() as conn:
        ds = create_source(conn, "Website leads", "custom", {})
        register_attribute_types(conn, {"seats": "Integer"})
        upsert_records(conn, ds.id, [
            SourceCustomerRecord(ext, name=name, email=email, country=country, lead_created_at=_months_ago(m),
                                 free_trial_started_at=_months_ago(m) + timedelta(days=2) if trial else None,
                                 tags=tags, custom={"seats": seats} if seats is not None else {},
                                 company=FORMULA_COMPANY if ext == "L-8" else None,
                                 owner="rep one@example.com" if ext in ("L-1", "L-4", "L-6") else None)
            for ext, name, email, country, m, trial, tags, seats in people
        ])
        key = create_api_key(conn, "browser test")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(sqlite_engine), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", key
    uv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module (each test opens its own pages, each page its own context and cookies)."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (as .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _label(period: str) -> str:
    y, m, _ = period[:10].split("-")
    return f"{MONTHS[int(m) - 1]} {y}"


def _api_funnel(url, key, **params):
    today = date.today()
    index = today.year * 12 + today.month - 1 - 11
    start = date(index // 12, index % 12 + 1, 1)
    query = {"start-date": start.isoformat(), "end-date": today.isoformat(), "interval": "month", **params}
    response = httpx.get(f"{url}/v1/metrics/funnel", params=query, auth=(key, ""), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["series"]


def _chart_rows(page, chart):
    return page.eval_on_selector_all(
        f"#{chart}-data tbody tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent))")


def test_dashboard_in_chromium(server, browser, tmp_path):
    url, key = server
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Sign-in: the dashboard sends a browser without a session to the sign-in page; a wrong key is refused.
    page.goto(f"{url}/dashboard")
    assert page.url == f"{url}/login"
    page.fill("#key", "fsk_wrong_key_0000")
    page.click("#login button[type=submit]")
    assert page.locator("#login-error").is_visible() and page.url == f"{url}/login"
    page.fill("#key", key)
    page.click("#login button[type=submit]")
    page.wait_for_url(f"{url}/dashboard")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["fs_session"]["httpOnly"] and cookies["fs_session"]["sameSite"] == "Strict"

    # Opens on the last 12 months by month; the charts' figures are the API's.
    page.wait_for_selector("#chart-leads-data tbody tr")
    series = _api_funnel(url, key)
    assert len(series) == 12
    rows = _chart_rows(page, "chart-leads")
    assert [r[0] for r in rows] == [_label(s["period"]) for s in series]
    assert [int(r[1]) for r in rows] == [s["leads"] for s in series]
    assert [int(r[2]) for r in rows] == [s["leads_with_trial"] for s in series]
    assert [int(r[1]) for r in _chart_rows(page, "chart-trials")] == [s["free_trials"] for s in series]
    assert page.text_content("#total-leads") == f"{sum(s['leads'] for s in series)} leads"
    assert page.text_content("#total-trials") == f"{sum(s['free_trials'] for s in series)} trials"
    assert sum(s["leads"] for s in series) == 8

    # Labels as people read them; axis ticks never repeat, an empty chart included.
    assert page.evaluate("periodLabel('2026-01-01', 'month')") == "Jan 2026"
    assert page.evaluate("periodLabel('2026-01-12', 'week')") == "W03 2026"
    assert page.evaluate("periodLabel('2026-01-01', 'quarter')") == "Q1 2026"
    for top in (0, 1, 2, 3, 5, 7, 13, 101):
        ticks = page.evaluate(f"axisTicks({top}, true)")
        assert len(set(ticks)) == len(ticks) and ticks[0] == 0 and ticks[-1] >= max(top, 1)
        assert all(float(t).is_integer() for t in ticks), ticks

    # Values on hover: the tooltip of the month with two leads.
    two = next(i for i, s in enumerate(series) if s["leads"] == 2)
    box = page.locator("#chart-leads").bounding_box()
    slot = (box["width"] - 52 - 10) / len(series)
    page.mouse.move(box["x"] + 52 + slot * two + slot / 2, box["y"] + box["height"] / 2)
    assert page.locator("#tooltip").is_visible()
    assert page.text_content("#tooltip").startswith(f"{_label(series[two]['period'])}: 2 leads")

    # By keyboard: a chart takes the focus and the arrow keys show each period's figures, as hovering does.
    page.mouse.move(0, 0)
    page.focus("#chart-leads")
    page.keyboard.press("ArrowRight")
    assert page.text_content("#tooltip") == (f"{_label(series[0]['period'])}: {series[0]['leads']} leads "
                                             f"({series[0]['leads_with_trial']} with a trial, "
                                             f"{series[0]['non_trial_leads']} without)")
    page.keyboard.press("End")
    assert page.text_content("#tooltip").startswith(f"{_label(series[-1]['period'])}: {series[-1]['leads']} leads")
    # The chart colours stay apart for each common colour-vision deficiency (simulated).
    colors = page.evaluate("COLORS")
    for first, second in (("accent", "accent2"), ("accent", "accent3")):
        for kind in CVD:
            distance = _delta_e(_simulate(colors[first], kind), _simulate(colors[second], kind))
            assert distance >= 40, (first, second, kind, distance)

    # A segment chosen with the controls changes the figures as the API says; the table follows it.
    page.select_option("#seg-country", "US")
    page.click("#controls button[type=submit]")
    us = _api_funnel(url, key, where="country = US")
    us_total = sum(s["leads"] for s in us)
    page.wait_for_function(f"document.getElementById('total-leads').textContent === '{us_total} leads'")
    assert [int(r[1]) for r in _chart_rows(page, "chart-leads")] == [s["leads"] for s in us]
    assert sum(s["leads"] for s in us) == 4
    page.wait_for_function(f"document.querySelectorAll('#customers tbody tr').length === {us_total}")
    assert "where=country+%3D+US" not in page.url and "country=US" in page.url

    # Search finds a customer (within the segment); a name with markup is shown as text, never run.
    page.fill("#q", "lovelace")
    page.click("#search button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#customers tbody tr').length === 1")
    assert page.text_content("#customers tbody tr td.name") == "Ada Lovelace"
    page.select_option("#seg-country", "")
    page.click("#controls button[type=submit]")
    page.fill("#q", "mallory")
    page.click("#search button[type=submit]")
    page.wait_for_function("document.querySelector('#customers tbody tr td.name').textContent.includes('Mallory')")
    assert page.text_content("#customers tbody tr td.name") == XSS_NAME
    assert page.evaluate("window.__xss") is None and page.locator("#customers img").count() == 0

    page.fill("#q", "")
    page.fill("#where", "")
    page.click("#search button[type=submit]")
    page.click("#controls button[type=submit]")
    page.wait_for_function("document.getElementById('total-leads').textContent === '8 leads'")
    page.wait_for_function("document.querySelectorAll('#customers tbody tr').length === 8")
    # Sorting and opening a customer by keyboard alone.
    page.focus("#customers th[data-sort=name] button")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#customers th[data-sort=name]').ariaSort === 'ascending'")
    by_name = httpx.get(f"{url}/dashboard/customers", params={"sort": "name", "order": "asc"}, auth=(key, ""),
                        timeout=10).json()["entries"]
    page.wait_for_function("names => [...document.querySelectorAll('#customers td.name')].map(c => c.textContent)"
                           ".join('|') === names.join('|')", arg=[c["name"] for c in by_name])
    page.focus("#customers td.name a")
    page.keyboard.press("Enter")
    page.wait_for_function("name => document.querySelector('#detail h2') && "
                           "document.querySelector('#detail h2').textContent === name", arg=by_name[0]["name"])
    assert page.evaluate("document.documentElement.scrollWidth") <= 1280  # nothing wider than the window
    page.screenshot(path=str(tmp_path / "dashboard-desktop.png"), full_page=True)
    phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    phone.context.add_cookies([{**cookies["fs_session"]}, {**cookies["fs_csrf"]}])
    phone.goto(f"{url}/dashboard")
    phone.wait_for_selector("#chart-leads-data tbody tr")
    phone.wait_for_function("document.querySelectorAll('#customers tbody tr').length === 8")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390 + 1  # nothing wider than the phone
    # Turned to landscape and back (a redraw at a pixel ratio of 2), the charts keep their height.
    phone.set_viewport_size({"width": 844, "height": 390})
    phone.wait_for_timeout(400)
    phone.set_viewport_size({"width": 390, "height": 844})
    phone.wait_for_timeout(400)
    assert [phone.locator(f"#{c}").bounding_box()["height"] for c in ("chart-leads", "chart-cycle")] == [220, 220]
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390 + 1
    phone.screenshot(path=str(tmp_path / "dashboard-phone.png"), full_page=True)

    # A range with nothing in it says so, and where the data is.
    page.fill("#start", "2010-01-01")
    page.fill("#end", "2010-12-31")
    page.click("#controls button[type=submit]")
    page.wait_for_selector("#empty:not([hidden])")
    first = min(s["period"] for s in series if s["leads"])[:7]
    message = page.text_content("#empty")
    assert message.startswith("No data in this range.") and f"from {first}" in message and "8 customers" in message
    held = httpx.get(f"{url}/dashboard/data-range", auth=(key, ""), timeout=10).json()
    assert held["first"].startswith(first) and f"The data runs from {held['first']} to {held['last']}" in message
    last = max(s["period"] for s in series if s["leads"] or s["free_trials"])[:7]
    assert held["last"].startswith(last)

    assert errors == []
    for name in ("dashboard-desktop.png", "dashboard-phone.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        if os.environ.get("FUNNELSYNC_UPDATE_DOCS_IMG") == "1":
            DOCS_IMG.mkdir(exist_ok=True)
            shutil.copyfile(tmp_path / name, DOCS_IMG / name)


# Colour-vision deficiency simulation (Machado, Oliveira and Fernandes 2009, severity 1.0) on linear RGB.
CVD = {
    "protanopia": ((0.152286, 1.052583, -0.204868), (0.114503, 0.786281, 0.099216), (-0.003882, -0.048116, 1.051998)),
    "deuteranopia": ((0.367322, 0.860646, -0.227968), (0.280085, 0.672501, 0.047413),
                     (-0.011820, 0.042940, 0.968881)),
    "tritanopia": ((1.255528, -0.076749, -0.178779), (-0.078411, 0.930809, 0.147602), (0.004733, 0.691367, 0.303900)),
}


def _linear(hex_color):
    channels = [int(hex_color.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    return [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]


def _simulate(hex_color, kind):
    rgb = _linear(hex_color)
    return [min(1.0, max(0.0, sum(m * c for m, c in zip(row, rgb, strict=True)))) for row in CVD[kind]]


def _delta_e(rgb1, rgb2):
    """CIE76 distance in Lab (D65) between two linear-RGB colours."""
    def lab(rgb):
        r, g, b = rgb
        xyz = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047, 0.2126 * r + 0.7152 * g + 0.0722 * b, \
            (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883
        f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 16 / 116 for t in xyz]
        return 116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])
    return sum((a - b) ** 2 for a, b in zip(lab(rgb1), lab(rgb2), strict=True)) ** 0.5


def _sign_in(browser, url, key):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{url}/login")
    page.fill("#key", key)
    page.click("#login button[type=submit]")
    page.wait_for_url(f"{url}/dashboard")
    return page


def _cli(engine, *args):
    """``funnelsync ARGS --json`` on the test's database, run in this process (a subprocess per call cost
    seconds each on a loaded machine), parsed."""
    import json

    from typer.testing import CliRunner

    from funnelsync.cli import app

    env = {"FUNNELSYNC_DATABASE_URL": engine.url.render_as_string(hide_password=False), "COLUMNS": "200"}
    result = CliRunner().invoke(app, [*args, "--json"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.output)


def _cli_show(engine, ref):
    return _cli(engine, "customers", "show", ref)


def test_customer_edits_from_the_dashboard_land_as_the_cli_shows_them(server, browser, sqlite_engine):
    url, key = server
    page = _sign_in(browser, url, key)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    before = _cli_show(sqlite_engine, "Website leads:L-1")
    page.goto(f"{url}/dashboard#customer={before['uuid']}")
    page.wait_for_selector("#edit-lead_created_at")
    lead = (datetime.fromisoformat(before["lead_created_at"]) - timedelta(days=20)).date().isoformat()
    page.fill("#edit-lead_created_at", lead)
    page.fill("#edit-owner", "rep@example.com")
    page.fill("#edit-tags", "vip, webinar")
    page.select_option("#edit-status", "Working_Lead")
    page.click("#edit button[type=submit]")
    page.wait_for_function("document.getElementById('edit-status') && "
                           "document.getElementById('edit-status').textContent === 'Saved.'")
    after = _cli_show(sqlite_engine, "Website leads:L-1")
    assert after["lead_created_at"].startswith(lead)
    assert after["lead_status"] == "Working_Lead" and sorted(after["tags"]) == ["vip", "webinar"]
    edited = {e["field"] for e in after["manual_edits"]} if isinstance(after["manual_edits"], list) \
        else set(after["manual_edits"])
    assert {"lead_created_at", "owner", "lead_status"} <= edited
    assert after["free_trial_started_at"] == before["free_trial_started_at"]  # only what was changed

    # A refused edit (a lead date after the trial) shows its reason next to the field and changes nothing.
    page.fill("#edit-lead_created_at", (datetime.fromisoformat(before["free_trial_started_at"]) + timedelta(days=3))
              .date().isoformat())
    page.click("#edit button[type=submit]")
    page.wait_for_function("document.querySelector('#edit .field-error:not(:empty)') !== null")
    reason = page.text_content("#edit .field-error:not(:empty)")
    assert "trial" in reason.lower()
    assert _cli_show(sqlite_engine, "Website leads:L-1")["lead_created_at"] == after["lead_created_at"]
    assert errors == []


def test_merge_and_unmerge_from_the_customer_page(server, browser, sqlite_engine):
    url, key = server
    page = _sign_in(browser, url, key)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    ada = _cli_show(sqlite_engine, "Website leads:L-1")
    alan = _cli_show(sqlite_engine, "Website leads:L-3")
    page.goto(f"{url}/dashboard#customer={ada['uuid']}")
    page.wait_for_selector("#merge-q")
    page.fill("#merge-q", "turing")
    page.click("#merge button:has-text('Find')")
    page.click(".merge-candidate button:has-text('Merge into this customer')")
    # The survivor's resulting fields before confirming: Ada's own, her tags kept.
    preview = page.text_content(".merge-preview")
    assert "Ada Lovelace" in preview and "vip" in preview
    assert _cli_show(sqlite_engine, "Website leads:L-3")["uuid"] == alan["uuid"]  # nothing merged before confirming
    page.click("#merge-confirm")
    page.wait_for_function("document.querySelectorAll('#records li').length === 2")
    merged = _cli_show(sqlite_engine, "Website leads:L-3")
    assert merged["uuid"] == ada["uuid"] and sorted(merged["external_ids"]) == ["L-1", "L-3"]
    assert "merge" in page.text_content("#merge-history") and alan["uuid"] in page.text_content("#merge-history")

    page.click("#records li:has-text('L-3') button.unmerge")
    page.wait_for_function("document.querySelectorAll('#records li').length === 1")
    back = _cli_show(sqlite_engine, "Website leads:L-3")
    assert back["uuid"] != ada["uuid"] and back["external_ids"] == ["L-3"] and back["name"] == "Alan Turing"
    assert _cli_show(sqlite_engine, "Website leads:L-1")["external_ids"] == ["L-1"]

    # Merged again, then undone from the merge history's line (the undone merge offers no second unmerge).
    page.wait_for_function("[...document.querySelectorAll('#merge-history li')].some(li => "
                           "li.textContent.includes('undone'))")
    assert page.locator("#merge-history li button.unmerge").count() == 0
    page.fill("#merge-q", "turing")
    page.click("#merge button:has-text('Find')")
    page.click(".merge-candidate button:has-text('Merge into this customer')")
    page.click("#merge-confirm")
    page.wait_for_function("document.querySelectorAll('#records li').length === 2")
    assert _cli_show(sqlite_engine, "Website leads:L-3")["uuid"] == ada["uuid"]
    latest = _cli(sqlite_engine, "merge", "--log", "--customer", ada["uuid"], "--limit", "1")[0]
    assert latest["kind"] == "merge" and latest["undone_at"] is None
    page.click(f"#merge-history li[data-event='{latest['uuid']}'] button.unmerge")
    page.wait_for_function("document.querySelectorAll('#records li').length === 1")
    again = _cli_show(sqlite_engine, "Website leads:L-3")
    assert again["uuid"] == back["uuid"] and again["external_ids"] == ["L-3"]
    assert _cli(sqlite_engine, "merge", "--log", "--customer", ada["uuid"], "--limit", "3")[1]["undone_at"]
    assert page.locator("#merge-history li button.unmerge").count() == 0
    assert errors == []


def test_the_url_holds_the_view(server, browser):
    """A view (range, interval, filter) can be shared: Apply writes it into the URL, and the URL opens it."""
    url, key = server
    page = _sign_in(browser, url, key)
    page.wait_for_selector("#chart-leads-data tbody tr")
    page.select_option("#interval", "quarter")
    page.fill("#where", "country = US")
    page.click("#controls button[type=submit]")
    page.wait_for_function("window.location.search.includes('interval=quarter')")
    shared = page.url
    assert "where=country+%3D+US" in shared

    other = _sign_in(browser, url, key)
    other.goto(shared)
    other.wait_for_selector("#chart-leads-data tbody tr")
    assert other.input_value("#interval") == "quarter" and other.input_value("#where") == "country = US"
    start, end = other.input_value("#start"), other.input_value("#end")
    api = httpx.get(f"{url}/v1/metrics/funnel", auth=(key, ""), timeout=10, params={
        "start-date": start, "end-date": end, "interval": "quarter", "where": "country = US"}).json()["series"]
    rows = _chart_rows(other, "chart-leads")
    assert [r[0] for r in rows] == [f"Q{(int(s['period'][5:7]) - 1) // 3 + 1} {s['period'][:4]}" for s in api]
    assert [int(r[1]) for r in rows] == [s["leads"] for s in api] and sum(s["leads"] for s in api) == 4


def test_segment_controls_build_the_cli_filter_and_the_table_shows_and_exports_the_view(server, browser, sqlite_engine,
                                                                                         tmp_path):
    """The segment controls write the shared filter grammar: the copyable command, run as it stands, gives the
    charts' figures; the table shows that segment, sorts, pages, and exports it (formula-escaped) as the API."""
    import csv
    import shlex

    url, key = server
    page = _sign_in(browser, url, key)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.wait_for_selector("#seg-tag option[value=vip]", state="attached")
    page.select_option("#seg-source", "Website leads")
    page.select_option("#seg-tag", "vip")
    page.select_option("#seg-owner", "rep one@example.com")
    page.select_option("#seg-attr", "seats")
    page.select_option("#seg-attr-op", ">=")
    page.fill("#seg-attr-value", "5")
    page.click("#controls button[type=submit]")
    where = ['source = "Website leads"', "owner = \"rep one@example.com\"", "tag = vip", "custom.seats >= 5"]
    api = _api_funnel(url, key, where=where)
    total = sum(s["leads"] for s in api)
    assert total == 2  # Ada (12 seats) and Edsger (40); Donald has 2
    page.wait_for_function(f"document.getElementById('total-leads').textContent === '{total} leads'")
    command = page.text_content("#cli-filter")
    argv = shlex.split(command)
    assert argv[:2] == ["funnelsync", "metrics"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--where"] == where
    cli = _cli(sqlite_engine, *argv[1:])
    assert [s["leads"] for s in cli["series"]] == [int(r[1]) for r in _chart_rows(page, "chart-leads")] == [
        s["leads"] for s in api]

    # The table shows the segment, as the table API answers for it.
    page.wait_for_function("document.querySelectorAll('#customers tbody tr').length === 2")
    names = page.eval_on_selector_all("#customers tbody tr td.name", "cells => cells.map(c => c.textContent)")
    expected = httpx.get(f"{url}/dashboard/customers", params={"where": where}, auth=(key, ""), timeout=10).json()
    assert names == [c["name"] for c in expected["entries"]] and sorted(names) == ["Ada Lovelace", "Edsger Dijkstra"]

    # The URL holds the segment: opened elsewhere, the same controls and figures.
    other = _sign_in(browser, url, key)
    other.goto(page.url)
    other.wait_for_function(f"document.getElementById('total-leads').textContent === '{total} leads'")
    assert other.input_value("#seg-owner") == "rep one@example.com" and other.input_value("#seg-attr-value") == "5"
    assert other.text_content("#cli-filter") == command

    # Sorting by a header, paging, and the CSV of the whole view, on every customer.
    for select in ("#seg-source", "#seg-tag", "#seg-owner", "#seg-attr"):
        page.select_option(select, "")
    page.click("#controls button[type=submit]")
    page.wait_for_function("document.getElementById('total-leads').textContent === '8 leads'")
    view = urlsplit(page.url)
    page.goto(urlunsplit(view._replace(query=urlencode({**dict(parse_qsl(view.query)), "per_page": "3"}),
                                       fragment="")))
    page.wait_for_function("document.getElementById('count').textContent.includes('of 8 customers')")
    page.click("#customers th[data-sort=name] button")
    page.wait_for_function("document.querySelector('#customers th[data-sort=name]').ariaSort === 'ascending'")
    page.click("#next")
    page.wait_for_function("document.getElementById('count').textContent.includes('page 2 of 3')")
    second = page.eval_on_selector_all("#customers tbody tr td.name", "cells => cells.map(c => c.textContent)")
    api_page = httpx.get(f"{url}/dashboard/customers", auth=(key, ""), timeout=10,
                         params={"sort": "name", "order": "asc", "per_page": 3, "page": 2}).json()
    assert second == [c["name"] for c in api_page["entries"]] and len(second) == 3
    assert "sort=name" in page.url and "page=2" in page.url

    with page.expect_download() as download:
        page.click("#export")
    path = tmp_path / "customers.csv"
    download.value.save_as(path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    everyone = httpx.get(f"{url}/dashboard/customers", auth=(key, ""), timeout=10,
                         params={"sort": "name", "order": "asc", "per_page": 200}).json()["entries"]
    assert [r["name"] for r in rows] == [c["name"] for c in everyone] and len(rows) == 8  # the view, not a page
    mallory = next(r for r in rows if r["name"] == XSS_NAME)
    assert mallory["company"] == "'" + FORMULA_COMPANY  # a spreadsheet shows it as text, never runs it
    assert errors == []


def test_add_a_lead_edit_a_custom_attribute_and_revert_it_from_the_dashboard(server, browser, sqlite_engine):
    """A lead added on the page, a typed custom attribute edited (a value not fitting its type refused next to
    its field), and the manual edit reverted to the source's value: each as the CLI then shows it."""
    url, key = server
    page = _sign_in(browser, url, key)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.wait_for_selector("#chart-leads-data tbody tr")
    page.click("#add-lead summary")
    page.fill("#add-external_id", "UI-1")
    page.fill("#add-name", "Hedy Lamarr")
    page.fill("#add-email", "hedy at lamarr")
    page.fill("#add-country", "AT")
    page.fill("#add-tags", "inventor")
    page.click("#add-lead-form button[type=submit]")
    page.wait_for_function("document.getElementById('add-email-error').textContent !== ''")
    assert "email" in page.text_content("#add-email-error").lower()
    assert httpx.get(f"{url}/v1/customers", params={"q": "Lamarr"}, auth=(key, "")).json()["entries"] == []
    page.fill("#add-email", "hedy@lamarr.example")
    page.click("#add-lead-form button[type=submit]")
    page.wait_for_function("document.querySelector('#detail h2') && "
                           "document.querySelector('#detail h2').textContent === 'Hedy Lamarr'")
    hedy = _cli_show(sqlite_engine, "Website leads:UI-1")
    assert (hedy["name"], hedy["email"], hedy["country"], hedy["tags"]) == (
        "Hedy Lamarr", "hedy@lamarr.example", "AT", ["inventor"])
    leads = sum(s["leads"] for s in _api_funnel(url, key))
    assert leads == 9
    page.wait_for_function(f"document.getElementById('total-leads').textContent === '{leads} leads'")

    ada = _cli_show(sqlite_engine, "Website leads:L-1")
    page.goto(f"{url}/dashboard#customer={ada['uuid']}")
    # (A change of the #fragment only: the page stays, and the detail turns to Ada.)
    page.wait_for_function("document.querySelector('#detail h2').textContent === 'Ada Lovelace'")
    assert page.input_value("#edit-custom-seats") == "12"
    page.fill("#edit-custom-seats", "twelve")
    page.click("#edit button[type=submit]")
    page.wait_for_function("document.getElementById('edit-custom-seats-error').textContent !== ''")
    assert "Integer" in page.text_content("#edit-custom-seats-error")
    assert _cli_show(sqlite_engine, "Website leads:L-1")["custom"]["seats"] == 12  # nothing written
    page.fill("#edit-custom-seats", "20")
    page.click("#edit button[type=submit]")
    page.wait_for_selector("#manual-edits li[data-field='custom.seats']")
    edited = _cli_show(sqlite_engine, "Website leads:L-1")
    assert edited["custom"]["seats"] == 20 and "custom.seats" in edited["manual_edits"]
    assert "20 (edited)" in page.text_content("#detail dl")

    page.click("#manual-edits li[data-field='custom.seats'] button.revert")
    page.wait_for_function("document.querySelector(\"#manual-edits li[data-field='custom.seats']\") === null")
    back = _cli_show(sqlite_engine, "Website leads:L-1")
    assert back["custom"]["seats"] == 12 and "custom.seats" not in back["manual_edits"]
    assert page.input_value("#edit-custom-seats") == "12" and "(edited)" not in page.text_content("#detail dl")
    assert errors == []


def test_bulk_edit_of_the_selected_rows_shows_the_skipped_with_reasons(server, browser, sqlite_engine):
    """Rows ticked in the table get one edit through the bulk-edit API; a customer the rules refuse (a lead
    date after its trial) is skipped, named on the page with the reason, and left as it was."""
    url, key = server
    page = _sign_in(browser, url, key)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    grace, alan = _cli_show(sqlite_engine, "Website leads:L-2"), _cli_show(sqlite_engine, "Website leads:L-3")
    page.wait_for_function("document.querySelectorAll('#customers input.pick').length === 8")
    assert page.locator("#bulk").is_hidden()
    page.check(f"#customers input.pick[value='{grace['uuid']}']")
    page.check(f"#customers input.pick[value='{alan['uuid']}']")
    assert page.text_content("#bulk-count") == "2 selected"
    # After Grace's trial (so her lead may not move there) and before today.
    lead = (datetime.fromisoformat(grace["free_trial_started_at"]) + timedelta(days=5)).date().isoformat()
    page.select_option("#bulk-field", "lead_created_at")
    page.fill("#bulk-value", lead)
    page.click("#bulk button[type=submit]")
    page.wait_for_selector("#bulk-skips li")
    assert page.text_content("#bulk-result p") == "Applied to 1, skipped 1."
    skipped = page.eval_on_selector_all("#bulk-skips li", "items => items.map(i => i.textContent)")
    assert len(skipped) == 1 and skipped[0].startswith("Grace Hopper: ") and "trial" in skipped[0]
    assert _cli_show(sqlite_engine, "Website leads:L-3")["lead_created_at"].startswith(lead)
    assert _cli_show(sqlite_engine, "Website leads:L-2")["lead_created_at"] == grace["lead_created_at"]
    assert alan["lead_created_at"] != _cli_show(sqlite_engine, "Website leads:L-3")["lead_created_at"]

    # A value the API refuses shows next to the bulk form, and nothing is written.
    page.check(f"#customers input.pick[value='{grace['uuid']}']")
    page.select_option("#bulk-field", "lead_status")
    page.fill("#bulk-value", "Sleeping")
    page.click("#bulk button[type=submit]")
    page.wait_for_function("document.getElementById('bulk-error').textContent !== ''")
    assert "Sleeping" in page.text_content("#bulk-error")
    assert _cli_show(sqlite_engine, "Website leads:L-2")["lead_status"] is None
    assert errors == []


def _seed_billing(engine):
    """Two paying customers of a billing source, with raw payloads and subscriptions: one paid 10 days into its
    trial, one 40 days in (so "within 30 days" counts one of them)."""
    from funnelsync.records import SubscriptionFact

    trial = _months_ago(3)
    with engine.begin() as conn:
        ds = create_source(conn, "Billing", "custom", {})
        upsert_records(conn, ds.id, [
            SourceCustomerRecord("K-1", name="Katherine Johnson", email="katherine@nasa.example", company="NASA",
                                 country="US", state="VA", city="Hampton", zip="23681", lead_created_at=trial,
                                 free_trial_started_at=trial,
                                 raw={"id": "K-1", "plan": "<b>pro</b>", "seats": 3, "meta": {"team": "<i>x</i>"}},
                                 subscriptions=[SubscriptionFact("sub_k1", "active", trial_started_at=trial,
                                                                 first_paid_at=trial + timedelta(days=10))]),
            SourceCustomerRecord("K-2", name="Mary Jackson", email="mary@nasa.example", lead_created_at=trial,
                                 free_trial_started_at=trial, raw={"id": "K-2"},
                                 subscriptions=[SubscriptionFact("sub_k2", "active", trial_started_at=trial,
                                                                 first_paid_at=trial + timedelta(days=40))]),
        ])


def test_trial_to_paid_within_n_days_follows_the_api(server, browser, sqlite_engine):
    """The "Converted within N days" control narrows the Trial-to-Paid chart as the API's ``within-days`` does,
    and the chart's total beside its title follows."""
    url, key = server
    _seed_billing(sqlite_engine)
    page = _sign_in(browser, url, key)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.wait_for_selector("#chart-rate-data tbody tr")
    anytime = _api_funnel(url, key)
    within = _api_funnel(url, key, **{"within-days": 30})
    assert sum(s["trials_converted"] for s in anytime) == 2 and sum(s["trials_converted"] for s in within) == 1
    trials = sum(s["free_trials"] for s in anytime)
    assert [int(r[2]) for r in _chart_rows(page, "chart-rate")] == [s["trials_converted"] for s in anytime]
    assert page.text_content("#total-rate").endswith(f"(2/{trials})")
    page.fill("#within", "30")
    page.click("#controls button[type=submit]")
    page.wait_for_function(f"document.getElementById('total-rate').textContent.endsWith('(1/{trials})')")
    assert [int(r[2]) for r in _chart_rows(page, "chart-rate")] == [s["trials_converted"] for s in within]
    assert "within=30" in page.url
    assert "--within-days 30" in page.text_content("#cli-filter")
    assert errors == []


def test_the_customer_page_shows_every_field_source_records_raw_values_subscriptions_and_contacts(
        server, browser, sqlite_engine):
    """The customer page holds all the customer's fields, each source record with what it reported and its raw
    values, its subscriptions, and its contacts; supplied text (a payload's markup) stays text."""
    url, key = server
    _seed_billing(sqlite_engine)
    katherine = _cli_show(sqlite_engine, "Billing:K-1")
    api = httpx.get(f"{url}/v1/customers/{katherine['uuid']}", auth=(key, ""), timeout=10).json()
    contact = httpx.post(f"{url}/v1/customers/{katherine['uuid']}/contacts", auth=(key, ""), timeout=10, json={
        "first_name": "Dorothy", "last_name": "Vaughan", "title": "<b>Head</b> of computing",
        "email": "dorothy@nasa.example", "data_source_uuid": api["data_source_uuid"]})
    assert contact.status_code == 201, contact.text
    page = _sign_in(browser, url, key)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/dashboard#customer={katherine['uuid']}")
    page.wait_for_selector("#contacts")
    shown = dict(zip(page.eval_on_selector_all("#detail > dl > dt", "els => els.map(e => e.textContent)"),
                     page.eval_on_selector_all("#detail > dl > dd", "els => els.map(e => e.textContent)"),
                     strict=True))
    for label, field in (("Name", "name"), ("Email", "email"), ("Company", "company"), ("Country", "country"),
                         ("State", "state"), ("City", "city"), ("Zip", "zip"), ("Status", "status"),
                         ("Customer since", "customer-since"), ("Lead created", "lead_created_at"),
                         ("Free trial started", "free_trial_started_at"), ("Created", "created_at")):
        assert shown[label] == api[field], (label, shown[label], api[field])
    assert api["status"] == "Active" and shown["Lead status"] == "–"

    record = page.locator("#records li[data-external-id='K-1']")
    assert record.text_content().startswith("Billing: K-1")
    subs = record.locator("table.subscriptions tbody tr").all_text_contents()
    assert len(subs) == 1 and "sub_k1" in subs[0] and "active" in subs[0]
    assert day_of(katherine["free_trial_started_at"]) in subs[0]
    record.locator("details.raw summary").click()
    raw = dict(zip(record.locator("details.raw dt").all_text_contents(),
                   record.locator("details.raw dd").all_text_contents(), strict=True))
    assert raw == {"id": "K-1", "plan": "<b>pro</b>", "seats": "3", "meta": '{"team":"<i>x</i>"}'}
    reported = dict(zip(record.locator("details.fields dt").all_text_contents(),
                        record.locator("details.fields dd").all_text_contents(), strict=True))
    assert (reported["name"], reported["city"], reported["email"]) == ("Katherine Johnson", "Hampton",
                                                                  "katherine@nasa.example")

    people = page.locator("#contacts tbody tr").all_text_contents()
    assert len(people) == 1 and "Dorothy Vaughan" in people[0] and "<b>Head</b> of computing" in people[0]
    assert page.locator("#detail b, #detail i").count() == 0  # markup from a source or a person is text

    # A record stored without raw values says so; no subscriptions, no contacts.
    ada = _cli_show(sqlite_engine, "Website leads:L-1")
    page.goto(f"{url}/dashboard#customer={ada['uuid']}")
    page.wait_for_function("document.querySelector('#detail h2').textContent === 'Ada Lovelace'")
    assert page.locator("#records li[data-external-id='L-1'] table.subscriptions").count() == 0
    assert page.text_content("#records li[data-external-id='L-1'] .raw.none") == "No raw values stored for this record."
    assert page.locator("#contacts").text_content().endswith("No contacts.")
    assert errors == []


def day_of(iso: str) -> str:
    return iso[:10]


def test_status_segment_and_the_table_s_status_and_source_filters(server, browser, sqlite_engine):
    """The Status control of the segment filters the charts as the API's ``status = …``; the table's own status
    and data source filters narrow its rows as the table API does, and the URL keeps them."""
    url, key = server
    _seed_billing(sqlite_engine)
    page = _sign_in(browser, url, key)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.wait_for_selector("#seg-status option[value=Active]", state="attached")
    page.wait_for_function("document.querySelectorAll('#customers tbody tr').length === 10")
    page.select_option("#seg-status", "Active")
    page.click("#controls button[type=submit]")
    active = _api_funnel(url, key, where="status = Active")
    assert sum(s["leads"] for s in active) == 2
    page.wait_for_function("document.getElementById('total-leads').textContent === '2 leads'")
    assert [int(r[1]) for r in _chart_rows(page, "chart-leads")] == [s["leads"] for s in active]
    assert "--where 'status = Active'" in page.text_content("#cli-filter")
    page.select_option("#seg-status", "")
    page.click("#controls button[type=submit]")
    page.wait_for_function("document.getElementById('total-leads').textContent === '10 leads'")

    def names():
        return sorted(page.eval_on_selector_all("#customers tbody tr td.name",
                                                "cells => cells.map(c => c.textContent)"))

    page.select_option("#status", "Active")
    page.wait_for_function("document.querySelectorAll('#customers tbody tr').length === 2")
    assert names() == ["Katherine Johnson", "Mary Jackson"]
    assert "t_status=Active" in page.url
    page.select_option("#status", "")
    page.select_option("#source", label="Website leads")
    page.wait_for_function("document.querySelectorAll('#customers tbody tr').length === 8")
    sources = httpx.get(f"{url}/dashboard/segments", auth=(key, ""), timeout=10).json()["sources"]
    website = next(s["uuid"] for s in sources if s["name"] == "Website leads")
    expected = httpx.get(f"{url}/dashboard/customers", params={"data_source_uuid": website}, auth=(key, ""),
                         timeout=10).json()["entries"]
    assert names() == sorted(c["name"] for c in expected) and "Katherine Johnson" not in names()
    page.select_option("#status", "Active")
    page.wait_for_function("document.querySelectorAll('#customers tbody tr').length === 0")
    assert errors == []


def test_a_slow_answer_about_an_earlier_customer_never_replaces_the_one_opened_since(server, browser, sqlite_engine):
    """Opening one customer, then another before the first answered (a slow server, a quick second click, or a
    write's refresh racing the link's): the page ends on the one opened last, not on whichever answered last."""
    url, key = server
    page = _sign_in(browser, url, key)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    ada, grace = _cli_show(sqlite_engine, "Website leads:L-1"), _cli_show(sqlite_engine, "Website leads:L-2")
    page.wait_for_selector("#chart-leads-data tbody tr")
    held = []
    page.route(f"{url}/v1/customers/{ada['uuid']}", lambda route: held.append(route))  # held until released
    page.evaluate(f"window.location.hash = 'customer={ada['uuid']}'")
    deadline = time.monotonic() + 10
    while not held:
        assert time.monotonic() < deadline, "the page never asked for Ada"
        page.wait_for_timeout(50)
    page.evaluate(f"window.location.hash = 'customer={grace['uuid']}'")
    page.wait_for_function("document.querySelector('#detail h2') && "
                           "document.querySelector('#detail h2').textContent === 'Grace Hopper'")
    with page.expect_response(f"{url}/v1/customers/{ada['uuid']}/contacts?per_page=100"):
        held[0].continue_()
    page.wait_for_timeout(500)  # what Ada's late answer would have painted, had it been allowed to
    assert page.text_content("#detail h2") == "Grace Hopper"
    assert page.locator("#records li[data-external-id='L-2']").count() == 1
    assert errors == []


def test_a_slow_answer_about_an_earlier_view_never_replaces_the_charts_or_the_table_of_the_view_since(
        server, browser):
    """A filter changed back before the first change was answered: the charts and the table end on the view the
    controls show, whatever order the answers arrive in."""
    url, key = server
    page = _sign_in(browser, url, key)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.wait_for_function("document.getElementById('total-leads').textContent === '8 leads'")
    page.wait_for_function("document.querySelectorAll('#customers tbody tr').length === 8")
    held = []

    def hold_the_first(route):
        if not held:
            held.append(route)  # answered only when released below
        else:
            route.continue_()

    def wait_held():
        deadline = time.monotonic() + 10
        while not held:
            assert time.monotonic() < deadline, "the page never asked"
            page.wait_for_timeout(50)

    # The table: Active (no row) asked first and answered last; Any status (8 rows) is what the select shows.
    def table_calls(u):
        return "/dashboard/customers?" in u

    def chart_calls(u):
        return "/v1/metrics/funnel?" in u

    page.route(table_calls, hold_the_first)
    page.select_option("#status", "Active")
    wait_held()
    page.select_option("#status", "")
    page.wait_for_function("document.getElementById('count').textContent.startsWith('1–8 of 8')")
    with page.expect_response(lambda r: "/dashboard/customers?" in r.url and "status=Active" in r.url):
        held.pop().continue_()
    page.wait_for_timeout(500)
    assert page.locator("#customers tbody tr").count() == 8 and page.input_value("#status") == ""
    page.unroute(table_calls)

    # The charts: country US (4 leads) asked first and answered last; Any country (8 leads) is the view.
    page.route(chart_calls, hold_the_first)
    page.select_option("#seg-country", "US")
    page.click("#controls button[type=submit]")
    wait_held()
    page.select_option("#seg-country", "")
    page.click("#controls button[type=submit]")
    page.wait_for_function("document.getElementById('cli-filter').textContent.indexOf('--where') === -1")
    page.wait_for_timeout(500)
    assert page.text_content("#total-leads") == "8 leads"
    with page.expect_response(lambda r: "/v1/metrics/funnel?" in r.url and "country" in r.url):
        held.pop().continue_()
    page.wait_for_timeout(500)
    assert page.text_content("#total-leads") == "8 leads"
    assert errors == []
