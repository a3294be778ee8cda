"""Benchmark the HTTP API: creating customers one request at a time, and paging through all of them.

Seeds N customers with the batched upsert, then walks ``GET /v1/customers`` with the cursor (200 a page)
through a real uvicorn server on 127.0.0.1, with httpx, as a client script would; and times ``POST
/v1/customers`` for a few hundred new leads. Prints requests/s and customers/s.

    python bench/api.py                         # 100,000 customers, SQLite
    python bench/api.py --customers 20000 --db postgresql
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import uvicorn
from _db import bench_database
from sqlalchemy import Engine

from api.app import create_app
from funnelsync.records import SourceCustomerRecord
from storage.api_keys import create_api_key
from storage.db import make_engine
from storage.sources import create_source
from storage.upsert import upsert_records


def seed(engine: Engine, count: int) -> str:
    """Create an API source with ``count`` customers; return the source uuid."""
    base = datetime(2024, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        source = create_source(conn, "bench", "api")
    for start in range(0, count, 5000):
        records = [
            SourceCustomerRecord(external_id=f"b{i}", name=f"Customer {i}", email=f"c{i}@example.com",
                                 lead_created_at=base + timedelta(minutes=i), tags=["bench"])
            for i in range(start, min(count, start + 5000))
        ]
        with engine.begin() as conn:
            upsert_records(conn, source.id, records)
    return str(source.uuid)


def serve(engine: Engine) -> tuple[uvicorn.Server, threading.Thread, int]:
    """Start the app under uvicorn in a thread on a free port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(engine), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    return server, thread, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()

    with bench_database(args.db) as url:
        engine = make_engine(url)
        try:
            _measure(engine, args)
        finally:
            engine.dispose()


def _measure(engine: Engine, args: argparse.Namespace) -> None:
    with engine.begin() as conn:
        key = create_api_key(conn, "bench")
    t0 = time.perf_counter()
    ds = seed(engine, args.customers)
    print(f"seeded {args.customers:,} customers in {time.perf_counter() - t0:.1f} s ({args.db})")
    server, thread, port = serve(engine)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/v1", auth=(key, ""), timeout=60) as client:
            t0 = time.perf_counter()
            seen, pages, cursor = 0, 0, None
            while True:
                params = {"per_page": 200} | ({"cursor": cursor} if cursor else {})
                page = client.get("/customers", params=params).raise_for_status().json()
                seen += len(page["entries"])
                pages += 1
                if not page["has_more"]:
                    break
                cursor = page["cursor"]
            elapsed = time.perf_counter() - t0
            assert seen == args.customers, (seen, args.customers)
            print(f"list: {pages} pages of 200, {seen:,} customers in {elapsed:.1f} s = "
                  f"{pages / elapsed:.1f} pages/s, {seen / elapsed:,.0f} customers/s")
            t0 = time.perf_counter()
            for i in range(args.creates):
                client.post("/customers", json={
                    "data_source_uuid": ds, "external_id": f"new-{i}", "email": f"n{i}@example.com",
                    "lead_created_at": "2025-01-01 10:00:00", "free_trial_started_at": "2025-01-02",
                    "attributes": {"tags": ["new"], "custom": [{"type": "Integer", "key": "seats", "value": i}]},
                }).raise_for_status()
            elapsed = time.perf_counter() - t0
            print(f"create: {args.creates} POST /v1/customers in {elapsed:.1f} s = "
                  f"{args.creates / elapsed:.0f} requests/s")
            t0 = time.perf_counter()
            for i in range(args.creates):
                client.get("/customers/search", params={"email": f"c{i * 7}@example.com"}).raise_for_status()
            elapsed = time.perf_counter() - t0
            print(f"search: {args.creates} GET /v1/customers/search in {elapsed:.1f} s = "
                  f"{args.creates / elapsed:.0f} requests/s")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


if __name__ == "__main__":
    main()
