"""A long sync carries its read on in a child process (``jobs.stream_reader``) and stores exactly what
the same sync read on a thread stores.

The vendor behaviour relied on is the one ``tests/test_connectors_concurrency.py`` checked for Chargebee
(strict ``created_at[after]``/``[before]`` filters, ``next_offset`` chaining a list's pages, ``[in]``
filters for a page's subscriptions and invoices), served by ``fakes/chargebee.py`` over real HTTP.

Each case runs in a fresh interpreter with the fake API in a forked process of its own: a fake served on
a thread of the syncing process (or pytest's own threads) would rightly keep the read on a thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from storage.db import make_engine, upgrade

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, multiprocessing, os, sys
from fakes.chargebee import ChargebeeFake
from fakes.server import FakeServer

fake = ChargebeeFake(n=int(sys.argv[3]), page_size=10)
server = FakeServer(fake)
serving = multiprocessing.get_context("fork").Process(target=server.serve_forever, daemon=True)
serving.start()

import jobs.stream_reader as stream_reader
from jobs.sync import build_connector, run_stream
from storage.db import make_engine
from storage.sources import create_source
from storage.sync_state import load_cursor

producers = []
read_in_child = stream_reader.read_in_child

def spying(make):
    def marked():
        for batch in make():
            batch.producer = os.getpid()
            yield batch
    for batch in read_in_child(marked):
        producers.append(getattr(batch, "producer", None))
        yield batch

stream_reader.read_in_child = spying
out = {"me": os.getpid(), "runs": []}
concurrency = int(sys.argv[4])
for url, child_after in ((sys.argv[1], 3), (sys.argv[2], None)):
    engine = make_engine(url)
    with engine.begin() as conn:
        source_id = create_source(conn, "cb", "chargebee", {**fake.settings(), "concurrency": concurrency}).id
    row, connector = build_connector(engine, "cb", batch_size=10)
    counts, cursors = {}, {}
    with connector:
        for stream in connector.streams:
            summary = run_stream(engine, row.id, connector, stream.name, child_after=child_after)
            counts[stream.name] = summary.counts()
            with engine.connect() as conn:
                cursors[stream.name] = sorted(load_cursor(conn, source_id, stream.name))
    out["runs"].append({"counts": counts, "cursor_keys": cursors})
    engine.dispose()
out["producers"] = sorted({p for p in producers if p is not None})
out["from_child"] = sum(1 for p in producers if p is not None)
out["expected"] = sorted(fake.expected_ids())
serving.terminate()
print(json.dumps(out))
'''


def _run(*args: str) -> Any:
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _stored(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every table a sync writes, without the ids, uuids and time stamps of the moment it ran."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                "source_customers": [tuple(r) for r in conn.exec_driver_sql(
                    "SELECT external_id, name, email, email_norm, company, country, city, zip, lead_created_at, "
                    "free_trial_started_at, fingerprint FROM source_customers ORDER BY external_id")],
                "customers": [tuple(r) for r in conn.exec_driver_sql(
                    "SELECT sc.external_id, c.name, c.email_norm, c.status, c.lead_created_at, "
                    "c.free_trial_started_at, c.subscriber_since, c.has_subscriptions FROM customers c "
                    "JOIN source_customers sc ON sc.customer_id = c.id ORDER BY sc.external_id")],
                "subscriptions": [tuple(r) for r in conn.exec_driver_sql(
                    "SELECT sc.external_id, s.external_id, s.state, s.trial_started_at, s.first_paid_at, "
                    "s.cancelled_at FROM subscriptions s JOIN source_customers sc ON sc.id = s.source_customer_id "
                    "ORDER BY 1, 2")],
                "customer_count": [tuple(conn.exec_driver_sql("SELECT count(*) FROM customers").one())],
            }
    finally:
        engine.dispose()


@pytest.mark.parametrize("concurrency", [1, 3], ids=["sequential", "sliced"])
def test_a_long_first_sync_read_in_a_child_stores_what_a_thread_stores(tmp_path: Path, concurrency: int) -> None:
    """300 customers in batches of 10: after 3 batches the rest of the read comes from a forked child,
    resumed from the cursor of the last batch written (a page token, or every slice's), and the
    database ends byte for byte as after the same sync read on a thread, with no customer twice."""
    urls = [f"sqlite:///{tmp_path}/child.db", f"sqlite:///{tmp_path}/thread.db"]
    for url in urls:
        upgrade(make_engine(url))
    out = _run(*urls, "300", str(concurrency))
    assert out["from_child"] >= 20  # most batches came from the child...
    assert out["producers"] and out["me"] not in out["producers"]  # ...a process other than this one
    child, thread = out["runs"]
    assert child["counts"]["customers"]["created"] == thread["counts"]["customers"]["created"] == 300
    assert child["counts"]["customers"]["fetched"] == 300  # what the thread read ahead is not counted twice
    assert child["cursor_keys"] == thread["cursor_keys"]
    with_child, on_thread = (_stored(url) for url in urls)
    assert with_child == on_thread
    assert [r[0] for r in with_child["source_customers"]] == out["expected"]
    assert with_child["customer_count"] == [(300,)]


def test_a_short_sync_never_forks(tmp_path: Path) -> None:
    """Fewer batches than ``child_after``: everything is read on the thread, no child is started."""
    urls = [f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db"]
    for url in urls:
        upgrade(make_engine(url))
    out = _run(*urls, "25", "1")
    assert out["from_child"] == 0 and out["producers"] == []
    assert out["runs"][0]["counts"]["customers"]["created"] == 25
    assert _stored(urls[0]) == _stored(urls[1])
