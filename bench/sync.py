"""End-to-end sync benchmark: a fake paginated Chargebee API on 127.0.0.1 → sync_source → SQLite.

The fake runs under uvicorn in a separate process (so it does not share the sync's GIL), serves 100
records a page with no artificial latency, and answers the three requests the Chargebee connector
makes per page (customers, their subscriptions with ``customer_id[in]``, their paid invoices). Every
record goes through the real connector, HTTP client, mapping, upsert and cursor commit.

    python bench/sync.py                 # 200,000 customers
    python bench/sync.py --records 20000 # a quick run
    python bench/sync.py --latency-ms 50 --concurrency 1   # a remote API, read sequentially
    python bench/sync.py --latency-ms 50 --concurrency 8 --max-rps 100  # slices at once, paced

Prints records/s end to end, the CPU seconds of the syncing processes (this one and the reader
process it forks, ``jobs.stream_reader``: the figure that does not move with the load of a shared
machine), the fake API's CPU seconds, the peak resident memory, and the most requests the fake API
received in any one second (to compare with ``--max-rps``).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import multiprocessing
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs
from urllib.request import urlopen

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

T0 = 1_700_000_000
API_KEY = "bench_key"


# ----------------------------------------------------------------------------- the fake API


def _customer(i: int) -> dict:
    return {
        "id": f"cb_{i:07d}", "first_name": f"First{i}", "last_name": f"Last{i}",
        "email": f"user{i}@example{i % 97}.com", "company": f"Company {i % 5000}",
        "created_at": T0 + i, "updated_at": T0 + i, "deleted": False, "object": "customer",
        "auto_collection": "on", "taxability": "taxable", "resource_version": (T0 + i) * 1000,
        "billing_address": {"country": ["US", "DE", "FR", "GB", "JP"][i % 5], "city": "Springfield",
                            "zip": f"{i % 99999:05d}", "object": "billing_address"},
    }


def _subscriptions(i: int) -> list[dict]:
    shape, created = i % 5, T0 + i
    if shape == 0:
        return []
    trial = shape in (1, 2, 4)
    status = {1: "in_trial", 2: "active", 3: "active", 4: "cancelled"}[shape]
    return [{
        "id": f"sub_{i:07d}", "customer_id": f"cb_{i:07d}", "status": status,
        "trial_start": created if trial else None, "trial_end": created + 14 * 86400 if trial else None,
        "created_at": created, "started_at": created, "activated_at": None if status == "in_trial" else created,
        "cancelled_at": created + 14 * 86400 if status == "cancelled" else None, "updated_at": created,
        "due_invoices_count": 0, "object": "subscription", "currency_code": "USD", "billing_period": 1,
        "billing_period_unit": "month",
    }]


def _invoices(i: int) -> list[dict]:
    shape, created = i % 5, T0 + i
    if shape not in (2, 3):
        return []
    paid = created + (14 * 86400 if shape == 2 else 5)
    return [{"id": f"inv_{i:07d}", "customer_id": f"cb_{i:07d}", "subscription_id": f"sub_{i:07d}",
             "recurring": True, "status": "paid", "date": paid, "paid_at": paid, "total": 2900,
             "amount_paid": 2900, "object": "invoice", "currency_code": "USD"}]


def peak_per_second(arrivals: list[float]) -> int:
    """The most arrivals within any one-second window ``[t, t + 1)``."""
    arrivals = sorted(arrivals)
    return max((bisect.bisect_left(arrivals, t + 1.0) - i for i, t in enumerate(arrivals)), default=0)


def make_app(total: int, latency: float = 0.0):
    """A raw ASGI app: Chargebee's list envelope, ``next_offset`` paging, ``[in]`` and ``created_at`` filters.

    Each answer waits ``latency`` seconds first (a remote API); ``GET /_stats`` answers the request
    count and the most requests received in any one second.
    """
    arrivals: list[float] = []

    def page(items: list[dict], start: int, more: bool) -> bytes:
        body: dict = {"list": items}
        if more:
            body["next_offset"] = json.dumps([str(start + len(items)), "0"])
        return orjson.dumps(body)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/_stats":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            body = json.dumps({"requests": len(arrivals), "peak_per_second": peak_per_second(arrivals),
                               "cpu": usage.ru_utime + usage.ru_stime}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": body})
            return
        arrivals.append(time.monotonic())
        if latency:
            await asyncio.sleep(latency)
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        limit = int(query.get("limit", 100))
        status = 200
        if path.endswith("/customers"):
            # Customer i is created and updated at T0 + i: every filter is a range of i.
            first = max(int(query.get("updated_at[after]", T0 - 1)), int(query.get("created_at[after]", T0 - 1)))
            first -= T0 - 1
            stop = min(total, int(query.get("created_at[before]", T0 + total)) - T0)
            start = first + (int(json.loads(query["offset"])[0]) if "offset" in query else 0)
            end = min(stop, start + limit)
            if "sort_by[desc]" in query:  # the newest first (the connector asks for one, to slice)
                start, end = max(first, stop - limit), stop
            body = page([{"customer": _customer(i)} for i in range(start, end)], start - first, end < stop)
        elif path.endswith("/subscriptions"):
            if "customer_id[in]" in query:
                ids = [int(c[3:]) for c in json.loads(query["customer_id[in]"])]
                body = page([{"subscription": s} for i in ids for s in _subscriptions(i)], 0, False)
            else:  # the change feed: nothing changed since the first run
                body = page([], 0, False)
        elif path.endswith("/invoices"):
            ids = [int(c[3:]) for c in json.loads(query["customer_id[in]"])]
            body = page([{"invoice": inv} for i in ids for inv in _invoices(i)], 0, False)
        else:
            status, body = 404, b'{"message":"not found"}'
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def serve(port: int, total: int, latency: float = 0.0) -> None:
    import uvicorn

    uvicorn.run(make_app(total, latency), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int) -> None:
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("the fake API did not start")


# ----------------------------------------------------------------------------- the run


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended."""
    own, ended = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + ended.ru_utime + ended.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=None, help="records per transaction (connector default)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer of the fake API")
    parser.add_argument("--concurrency", type=int, default=None, help="slices read at once (connector default)")
    parser.add_argument("--max-rps", type=float, default=None, help="the source's max_requests_per_second")
    args = parser.parse_args()

    from jobs.sync import sync_source
    from storage.db import make_engine, upgrade
    from storage.sources import create_source

    port = free_port()
    server = multiprocessing.Process(target=serve, args=(port, args.records, args.latency_ms / 1000), daemon=True)
    server.start()
    try:
        wait_for(port)
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["FUNNELSYNC_HOME"] = tmp
            engine = make_engine(f"sqlite:///{tmp}/bench.db")
            upgrade(engine)
            with engine.begin() as conn:
                settings = {"site": "bench", "api_key": API_KEY, "base_url": f"http://127.0.0.1:{port}/api/v2",
                            "page_size": 100}
                if args.concurrency:
                    settings["concurrency"] = args.concurrency
                if args.max_rps:
                    settings["max_requests_per_second"] = args.max_rps
                create_source(conn, "bench", "chargebee", settings)
            options = {"batch_size": args.batch_size} if args.batch_size else {}
            cpu_before = _cpu_seconds()
            started = time.perf_counter()
            summary = sync_source(engine, "bench", **options)
            seconds = time.perf_counter() - started
            # This process and the reader process it forks (jobs.stream_reader); the fake API is a child
            # too, still running, so it is not counted among the finished children.
            cpu = _cpu_seconds() - cpu_before
            stats = json.loads(urlopen(f"http://127.0.0.1:{port}/_stats", timeout=10).read())  # noqa: S310 # nosec B310 # our local fake
            again_started = time.perf_counter()
            again = sync_source(engine, "bench", **options)
            again_seconds = time.perf_counter() - again_started
            engine.dispose()
    finally:
        server.terminate()
        server.join()
    server_cpu_s = stats["cpu"]
    total = summary.totals
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"records: {args.records:,}  fetched: {total['fetched']:,}  created: {total['created']:,}  "
          f"batches: {total['batches']:,}")
    print(f"full sync: {seconds:.1f} s  →  {args.records / seconds:,.0f} records/s end to end (SQLite); "
          f"latency {args.latency_ms:g} ms, concurrency {args.concurrency or 'default'}, "
          f"max_requests_per_second {args.max_rps or 'none'}")
    print(f"fake API: {stats['requests']:,} requests in the full sync, "
          f"at most {stats['peak_per_second']} in one second")
    # The machine is shared: wall-clock rates move with its load; CPU time per record does not.
    print(f"sync CPU (its processes): {cpu:.1f} s  →  {args.records / cpu:,.0f} records per CPU-second "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); fake API CPU: {server_cpu_s:.1f} s")
    print(f"second incremental sync: {again_seconds:.2f} s, created {again.totals['created']}, "
          f"updated {again.totals['updated']}")
    print(f"peak RSS of the syncing process: {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
