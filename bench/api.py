"""Benchmark the HTTP API as users run it: `funnelsync serve` in its own process, several clients at once.

Seeds N customers with the batched upsert, starts ``funnelsync serve`` (a separate process, its own
options) on 127.0.0.1, and walks ``GET /v1/customers`` with the cursor (200 a page) from one client, as a
client script would. Then, from a separate client process so the clients do not take the server's
interpreter, ``--clients`` concurrent clients (asyncio tasks, a keep-alive connection each: a minimal raw
HTTP/1.1 client, or httpx with ``--client httpx``) send a fixed number of requests per phase:
``POST /v1/customers`` (new leads),
``GET /v1/customers/search?email=`` and ``GET /v1/customers/{uuid}`` (seeded customers picked at random).
Prints requests/s and the p50/p99 latency of each phase, and the CPU time the client process used (on a
small machine the clients share the cores with the server: their CPU time says how much they took).

    python bench/api.py                         # 100,000 customers, SQLite, 8 clients
    python bench/api.py --customers 20000 --db postgresql --clients 4
    python bench/api.py --client httpx --serve-args="--key-cache-seconds 0"
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import random
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from _db import bench_database
from sqlalchemy import Engine

from funnelsync.records import SourceCustomerRecord
from storage.api_keys import create_api_key
from storage.db import make_engine
from storage.sources import create_source
from storage.upsert import upsert_records

ROOT = Path(__file__).resolve().parents[1]

# One request of a phase: method, path under /v1, keyword arguments for httpx (params or json).
Request = tuple[str, str, dict[str, Any]]


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(url: str, serve_args: list[str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``funnelsync serve`` in its own process on a free port (its output into ``log``), once /health answers."""
    port = _free_port()
    env = {**os.environ, "FUNNELSYNC_DATABASE_URL": url}
    with log.open("wb") as out:
        proc = subprocess.Popen(  # nosec B603 # our own interpreter and arguments, no shell
            [sys.executable, "-m", "funnelsync", "serve", "--port", str(port), *serve_args],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"funnelsync serve exited with {proc.returncode}: {_tail(log)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise SystemExit("funnelsync serve did not answer /health within 60 s")


def _tail(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-3000:]


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_phase(base_url: str, key: str, requests: list[Request], clients: int, client: str = "raw") -> dict[str, Any]:
    """In the client process: send ``requests`` from ``clients`` concurrent clients; time each one."""
    cpu0 = time.process_time()
    send_all = _send_all_raw if client == "raw" else _send_all_httpx
    try:
        import uvloop
    except ImportError:  # the server's extra speed-ups are optional for the client
        elapsed, latencies, failures = asyncio.run(send_all(base_url, key, requests, clients))
    else:
        elapsed, latencies, failures = uvloop.run(send_all(base_url, key, requests, clients))
    return {"elapsed": elapsed, "latencies": latencies, "failures": failures,
            "client_cpu": time.process_time() - cpu0}


async def _send_all_httpx(base_url: str, key: str, requests: list[Request], clients: int
                          ) -> tuple[float, list[float], list[str]]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies = [0.0] * len(requests)
    failures: list[str] = []
    todo = iter(range(len(requests)))  # shared by the tasks: each takes the next request when it is free
    async with httpx.AsyncClient(base_url=base_url, auth=(key, ""), timeout=60, limits=limits) as client:
        async def one_client() -> None:
            for i in todo:
                method, path, kwargs = requests[i]
                t0 = time.perf_counter()
                response = await client.request(method, path, **kwargs)
                latencies[i] = time.perf_counter() - t0
                if response.status_code >= 400:
                    failures.append(f"{method} {path}: {response.status_code} {response.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        return time.perf_counter() - t0, latencies, failures


class _Connection:
    """One keep-alive HTTP/1.1 connection of a raw client: the request written whole, the answer read by its
    Content-Length. httpx spends about 1.5 ms of CPU a request, which on a 2-core machine is more than the
    server's own cost and would make the clients, not the server, what the figures measure."""

    def __init__(self, base_url: str, key: str) -> None:
        url = httpx.URL(base_url)
        self.host, self.port, self.prefix = url.host, url.port or 80, url.path.rstrip("/")
        token = base64.b64encode(f"{key}:".encode()).decode()
        self.head = f"Host: {self.host}:{self.port}\r\nAuthorization: Basic {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, kwargs: dict[str, Any]) -> tuple[int, bytes]:
        target = self.prefix + path
        if "params" in kwargs:
            target += "?" + urlencode(kwargs["params"])
        body = json.dumps(kwargs["json"]).encode() if "json" in kwargs else b""
        extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n" if "json" in kwargs else ""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(f"{method} {target} HTTP/1.1\r\n{self.head}{extra}\r\n".encode() + body)
        status = int((await self.reader.readline()).split()[1])
        length, keep_alive = 0, True
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked answer: the raw client reads only Content-Length bodies")
            elif name == b"connection" and value.strip().lower() == b"close":
                keep_alive = False
        answer = await self.reader.readexactly(length)
        if not keep_alive:
            self.writer.close()
            self.reader = self.writer = None
        return status, answer


async def _send_all_raw(base_url: str, key: str, requests: list[Request], clients: int
                        ) -> tuple[float, list[float], list[str]]:
    latencies = [0.0] * len(requests)
    failures: list[str] = []
    todo = iter(range(len(requests)))  # shared by the tasks: each takes the next request when it is free

    async def one_client() -> None:
        connection = _Connection(base_url, key)
        for i in todo:
            method, path, kwargs = requests[i]
            t0 = time.perf_counter()
            status, answer = await connection.request(method, path, kwargs)
            latencies[i] = time.perf_counter() - t0
            if status >= 400:
                failures.append(f"{method} {path}: {status} {answer[:200]!r}")
        if connection.writer is not None:
            connection.writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return time.perf_counter() - t0, latencies, failures


def server_cpu(pid: int) -> float:
    """CPU seconds the server process has used so far (Linux; 0 elsewhere): under a busy machine's load,
    its CPU time per request says more about the server's own cost than its requests/s."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def report(label: str, result: dict[str, Any], clients: int, cpu: float) -> None:
    if result["failures"]:
        raise SystemExit(f"{label}: {len(result['failures'])} failed requests, first: {result['failures'][0]}")
    lat = sorted(result["latencies"])
    n, elapsed = len(lat), result["elapsed"]
    print(f"{label}: {n} requests from {clients} clients in {elapsed:.2f} s = {n / elapsed:,.0f} requests/s; "
          f"latency p50 {_percentile(lat, 0.50) * 1000:.1f} ms, p99 {_percentile(lat, 0.99) * 1000:.1f} ms "
          f"(server CPU {cpu * 1e6 / n:,.0f} µs a request; client process CPU {result['client_cpu']:.1f} s)",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--creates", type=int, default=1000, help="POST /v1/customers requests")
    parser.add_argument("--requests", type=int, default=3000, help="requests in each GET phase")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients")
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="raw: a minimal keep-alive HTTP/1.1 client (default); httpx: httpx.AsyncClient")
    parser.add_argument("--serve-args", default="", help="extra options for `funnelsync serve`, e.g. '--workers 2'")
    args = parser.parse_args()

    with bench_database(args.db) as url:
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                key = create_api_key(conn, "bench")
            t0 = time.perf_counter()
            ds = seed(engine, args.customers)
            print(f"seeded {args.customers:,} customers in {time.perf_counter() - t0:.1f} s ({args.db})")
        finally:
            engine.dispose()
        serve_args = shlex.split(args.serve_args)
        with tempfile.TemporaryDirectory(prefix="funnelsync-bench-serve-") as folder:
            log = Path(folder) / "serve.log"
            proc, port = start_server(url, serve_args, log)
            try:
                _measure(f"http://127.0.0.1:{port}/v1", key, ds, args, serve_args, proc.pid)
            except BaseException:
                print(f"server output (last lines):\n{_tail(log)}", file=sys.stderr)
                raise
            finally:
                stop_server(proc)


def _measure(base_url: str, key: str, ds: str, args: argparse.Namespace, serve_args: list[str], pid: int) -> None:
    print(f"server: funnelsync serve {' '.join(serve_args)}".rstrip() + f"; {args.client} clients; "
          f"{os.cpu_count()} cores; "
          f"load average before {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    uuids: list[str] = []
    with httpx.Client(base_url=base_url, auth=(key, ""), timeout=60) as client:
        t0 = time.perf_counter()
        seen, pages, cursor = 0, 0, None
        while True:
            params = {"per_page": 200} | ({"cursor": cursor} if cursor else {})
            page = client.get("/customers", params=params).raise_for_status().json()
            uuids += [entry["uuid"] for entry in page["entries"]]
            seen += len(page["entries"])
            pages += 1
            if not page["has_more"]:
                break
            cursor = page["cursor"]
        elapsed = time.perf_counter() - t0
    assert seen == args.customers, (seen, args.customers)
    print(f"list (1 client): {pages} pages of 200, {seen:,} customers in {elapsed:.1f} s = "
          f"{pages / elapsed:.1f} pages/s, {seen / elapsed:,.0f} customers/s", flush=True)

    rng = random.Random(20)
    warm = 20 * args.clients  # untimed requests first: connections opened, the server's caches warm
    creates: list[Request] = [
        ("POST", "/customers", {"json": {
            "data_source_uuid": ds, "external_id": f"new-{i}", "email": f"n{i}@example.com",
            "lead_created_at": "2025-01-01 10:00:00", "free_trial_started_at": "2025-01-02",
            "attributes": {"tags": ["new"], "custom": [{"type": "Integer", "key": "seats", "value": i}]},
        }}) for i in range(warm + args.creates)
    ]
    searches: list[Request] = [
        ("GET", "/customers/search", {"params": {"email": f"c{rng.randrange(args.customers)}@example.com"}})
        for _ in range(warm + args.requests)
    ]
    retrieves: list[Request] = [("GET", f"/customers/{rng.choice(uuids)}", {}) for _ in range(warm + args.requests)]
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        for label, requests in (("POST /v1/customers", creates), ("GET /v1/customers/search", searches),
                                ("GET /v1/customers/{uuid}", retrieves)):
            pool.submit(run_phase, base_url, key, requests[:warm], args.clients, args.client).result()
            cpu0 = server_cpu(pid)
            result = pool.submit(run_phase, base_url, key, requests[warm:], args.clients, args.client).result()
            report(label, result, args.clients, server_cpu(pid) - cpu0)
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
