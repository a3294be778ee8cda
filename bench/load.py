"""Load: an import, a sync and 20 API clients writing customers at once, on one database, for a while.

Starts ``funnelsync serve`` (its own process, 127.0.0.1), a Stripe fake served locally, and for the whole
duration keeps a ``funnelsync import csv`` and a ``funnelsync sync --full-refresh`` running (each started
again as soon as it ends) while 20 threads, each with its own httpx client, ``POST /v1/customers`` new
customers as fast as they are answered. Afterwards every acknowledged write is looked up in the database.

Prints the load average, the API's sustained requests/s, p50 and p99 latency, how many answers were 5xx
and how many of those said "database is locked", how many acknowledged writes are missing, and how the
background runs ended. Exits 1 when any answer was a 5xx or any acknowledged write is missing.

    python bench/load.py                              # SQLite, 60 s
    python bench/load.py --db postgresql --seconds 20
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from _db import bench_database
from sqlalchemy import select

from fakes.server import FakeServer
from fakes.stripe import StripeFake
from storage.api_keys import create_api_key
from storage.db import make_engine
from storage.schema import data_sources, source_customers
from storage.sources import create_source

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class Writer(threading.Thread):
    """One API client writing new customers until told to stop."""

    def __init__(self, n: int, base_url: str, key: str, source_uuid: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.n, self.base_url, self.key, self.source_uuid, self.stop = n, base_url, key, source_uuid, stop
        self.latencies: list[float] = []
        self.acknowledged: list[str] = []
        self.statuses: dict[int, int] = {}
        self.locked_5xx = 0
        self.transport_errors = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.base_url, auth=(self.key, ""), timeout=60) as client:
            i = 0
            while not self.stop.is_set():
                external_id = f"w{self.n}-{i}"
                i += 1
                began = time.perf_counter()
                try:
                    answer = client.post("/customers", json={
                        "data_source_uuid": self.source_uuid, "external_id": external_id,
                        "email": f"{external_id}@load.example", "name": f"Load {external_id}",
                        "lead_created_at": "2025-01-01T10:00:00Z"})
                except httpx.TransportError:
                    self.transport_errors += 1
                    continue
                self.latencies.append(time.perf_counter() - began)
                self.statuses[answer.status_code] = self.statuses.get(answer.status_code, 0) + 1
                if answer.status_code >= 500 and "locked" in answer.text:
                    self.locked_5xx += 1
                if 200 <= answer.status_code < 300:
                    self.acknowledged.append(external_id)


class Repeater(threading.Thread):
    """Run a CLI command again and again until told to stop; keep the exit codes."""

    def __init__(self, args: list[str], env: dict[str, str], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.args, self.env, self.stop = args, env, stop
        self.exit_codes: list[int] = []
        self.last_error = ""

    def run(self) -> None:
        while not self.stop.is_set():
            done = subprocess.run([sys.executable, "-m", "funnelsync", *self.args], capture_output=True,
                                  text=True, env=self.env, cwd=ROOT)
            self.exit_codes.append(done.returncode)
            if done.returncode:
                self.last_error = done.stderr.strip()[-300:]


def _leads(path: Path, rows: int) -> Path:
    path.write_text("Customer ID,Email,Name,Signup Date\n"
                    + "".join(f"i{i},i{i}@import.example,Imported {i},2025-02-{1 + i % 28:02d}\n" for i in range(rows)))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--import-rows", type=int, default=20_000)
    parser.add_argument("--sync-customers", type=int, default=400)
    args = parser.parse_args()
    with bench_database(args.db) as url:
        sys.exit(_run(url, args))


def _run(url: str, args: argparse.Namespace) -> int:
    import tempfile

    engine = make_engine(url)
    home = Path(tempfile.mkdtemp(prefix="funnelsync-load-"))
    with engine.begin() as conn:
        key = create_api_key(conn, "load")
        source_uuid = str(create_source(conn, "api-writers", "api").uuid)
    fake = StripeFake(n=args.sync_customers, page_size=20)
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": url, "FUNNELSYNC_HOME": str(home), "PYTHONPATH": str(ROOT),
           "FS_LOAD_STRIPE_KEY": fake.api_key}
    port = _free_port()
    with FakeServer(fake):
        subprocess.run([sys.executable, "-m", "funnelsync", "sources", "add", "billing", "--kind", "stripe",
                        "--set", "api_key=env:FS_LOAD_STRIPE_KEY", "--set", f"base_url={fake.base_url}"],
                       env=env, cwd=ROOT, check=True, capture_output=True)
        leads = _leads(home / "leads.csv", args.import_rows)
        server = subprocess.Popen([sys.executable, "-m", "funnelsync", "serve", "--port", str(port)], env=env,
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            base_url = f"http://127.0.0.1:{port}/v1"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            stop = threading.Event()
            importer = Repeater(["import", "csv", str(leads), "--source", "Leads", "--json"], env, stop)
            syncer = Repeater(["sync", "billing", "--full-refresh", "--json"], env, stop)
            writers = [Writer(n, base_url, key, source_uuid, stop) for n in range(args.clients)]
            load_before = os.getloadavg()
            began = time.perf_counter()
            for thread in (importer, syncer, *writers):
                thread.start()
            time.sleep(args.seconds)
            stop.set()
            for writer in writers:
                writer.join()
            elapsed = time.perf_counter() - began
            load_after = os.getloadavg()
            importer.join()
            syncer.join()
        finally:
            server.terminate()
            server_err = server.communicate(timeout=30)[1]

    latencies = sorted(x for w in writers for x in w.latencies)
    acknowledged = {x for w in writers for x in w.acknowledged}
    statuses: dict[int, int] = {}
    for w in writers:
        for code, count in w.statuses.items():
            statuses[code] = statuses.get(code, 0) + count
    five_xx = sum(c for code, c in statuses.items() if code >= 500)
    locked = sum(w.locked_5xx for w in writers)
    with engine.connect() as conn:
        joined = source_customers.join(data_sources, data_sources.c.id == source_customers.c.data_source_id)
        stored = set(conn.execute(select(source_customers.c.external_id).select_from(joined)
                                  .where(data_sources.c.uuid == source_uuid)).scalars())
    engine.dispose()
    missing = acknowledged - stored

    print(f"database: {args.db}; {args.clients} API clients, an import of {args.import_rows:,} rows and a sync of "
          f"{args.sync_customers} customers, all at once for {elapsed:.1f} s")
    print(f"load average: {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min), {os.cpu_count()} CPUs")
    print(f"API: {len(latencies):,} requests = {len(latencies) / elapsed:.1f} requests/s sustained; "
          f"p50 {_percentile(latencies, 0.50) * 1000:.0f} ms, p99 {_percentile(latencies, 0.99) * 1000:.0f} ms")
    print(f"answers: {dict(sorted(statuses.items()))}; 5xx: {five_xx}; 'database is locked' as 5xx: {locked}; "
          f"transport errors: {sum(w.transport_errors for w in writers)}")
    print(f"acknowledged writes: {len(acknowledged):,}; missing afterwards: {len(missing)}")
    print(f"imports run: {len(importer.exit_codes)} (exit codes {sorted(set(importer.exit_codes))}); "
          f"syncs run: {len(syncer.exit_codes)} (exit codes {sorted(set(syncer.exit_codes))})")
    for name, rep in (("import", importer), ("sync", syncer)):
        if rep.last_error:
            print(f"last {name} error: {rep.last_error}")
    if "Traceback" in server_err:
        print("server stderr:", server_err[-1500:])
    return 1 if five_xx or missing else 0


if __name__ == "__main__":
    main()
