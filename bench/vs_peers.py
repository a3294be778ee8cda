"""funnelsync's CSV import beside the tools a user might pick instead, on one generated file, in one run.

Each tool loads the same N-row flexible CSV into a fresh SQLite file and a fresh PostgreSQL schema, then
loads the unchanged file again:

- funnelsync: ``funnelsync import csv FILE --source bench`` (the command a user runs; ``init`` beforehand,
  not timed);
- dlt: a resource over the file's rows with ``write_disposition="merge"`` on the external id, into its
  ``sqlalchemy`` destination (SQLite) and its ``postgres`` destination;
- pandas: ``read_csv`` then ``to_sql`` (the naive baseline: it replaces the table, it does not merge).

Every load is a process of its own, timed from outside: wall seconds, CPU seconds of it and the children
it waited for, and its peak resident memory (``wait4``). The ratio column is dlt's wall time over ours
(above 1: we are faster). Peers need the ``bench`` extra: ``pip install -e .[bench]``.

    python bench/vs_peers.py                       # 1,000,000 rows, both databases
    python bench/vs_peers.py --rows 200000 --only sqlite --json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _db import POSTGRES_URL  # noqa: E402
from import_csv import generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

DLT_LOAD = r"""
import csv, sys, dlt
path, destination, target, dataset = sys.argv[1:5]

@dlt.resource(name="customers", write_disposition="merge", primary_key="customer_id")
def rows():
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        next(reader)
        names = ("customer_id", "name", "email", "company", "country", "signup_date", "trial_start",
                 "customer_since")
        for row in reader:
            yield dict(zip(names, row))

if destination == "sqlalchemy":
    dest = dlt.destinations.sqlalchemy(credentials=target)
else:
    dest = dlt.destinations.postgres(credentials=target)
pipeline = dlt.pipeline(pipeline_name="vs_peers_" + dataset, destination=dest, dataset_name=dataset,
                        pipelines_dir=sys.argv[5])
info = pipeline.run(rows())
info.raise_on_failed_jobs()
"""

PANDAS_LOAD = r"""
import sys
import pandas as pd
from sqlalchemy import create_engine
path, url = sys.argv[1:3]
frame = pd.read_csv(path)
engine = create_engine(url)
frame.to_sql("customers", engine, if_exists="replace", index=False, chunksize=50_000)
engine.dispose()
"""


@dataclass
class Load:
    tool: str
    database: str
    load: str
    seconds: float
    cpu_seconds: float
    peak_mb: float
    rows_per_s: float
    timed_out: bool = False


TIMEOUT = 900.0  # seconds a single load may take before it is stopped and reported as "more than"


def timed(argv: list[str], env: dict[str, str], rows: int, label: tuple[str, str, str]) -> Load:
    """Run one load as a child process; its wall time, CPU (with its reaped children) and peak memory.

    A load still running after ``TIMEOUT`` seconds is killed with its process group and reported with
    ``timed_out`` set and its seconds as the bound (dlt's merge into SQLite can take many minutes).
    """
    started = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = started + TIMEOUT
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                os.killpg(proc.pid, 9)
                _, status, usage = os.wait4(proc.pid, 0)
                return Load(
                    *label,
                    TIMEOUT,
                    round(usage.ru_utime + usage.ru_stime, 2),
                    round(usage.ru_maxrss / 1024, 1),
                    round(rows / TIMEOUT),
                    timed_out=True,
                )
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        log.seek(0)
        output = log.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(label)} failed (exit {proc.returncode}):\n{output.decode(errors='replace')[-3000:]}")
    return Load(
        *label,
        round(seconds, 2),
        round(usage.ru_utime + usage.ru_stime, 2),
        round(usage.ru_maxrss / 1024, 1),
        round(rows / seconds),
    )


def pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"


def pg_admin(sql: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text(sql))
    engine.dispose()


def ours(kind: str, path: Path, work: Path, rows: int) -> list[Load]:
    env = dict(os.environ, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    schema = f"vs_ours_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        env["FUNNELSYNC_DATABASE_URL"] = f"sqlite:///{work}/ours.db"
    else:
        pg_admin(f'CREATE SCHEMA "{schema}"')
        env["FUNNELSYNC_DATABASE_URL"] = pg_schema_url(schema)
    cli = [str(Path(PY).with_name("funnelsync"))]
    try:
        subprocess.run([*cli, "init"], env=env, cwd=ROOT, check=True, capture_output=True)
        command = [*cli, "import", "csv", str(path), "--source", "bench", "--json"]
        return [timed(command, env, rows, ("funnelsync", kind, load)) for load in ("first", "reload")]
    finally:
        if kind == "postgresql":
            pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


def dlt(kind: str, path: Path, work: Path, rows: int) -> list[Load]:
    dataset = f"vs_dlt_{uuid.uuid4().hex[:10]}"
    script = work / "dlt_load.py"
    script.write_text(DLT_LOAD)
    if kind == "sqlite":
        destination, target = "sqlalchemy", f"sqlite:///{work}/dlt.db"
    else:
        # dlt insists on a password; the local server's trust auth ignores it.
        from sqlalchemy.engine import make_url

        url = make_url(POSTGRES_URL).set(drivername="postgresql", password=make_url(POSTGRES_URL).password or "x")
        destination, target = "postgres", url.render_as_string(hide_password=False)
    env = dict(os.environ, RUNTIME__LOG_LEVEL="WARNING", DLT_DATA_DIR=str(work / "dlt-data"))
    argv = [PY, str(script), str(path), destination, target, dataset, str(work / "dlt-pipelines")]
    try:
        return [timed(argv, env, rows, ("dlt", kind, load)) for load in ("first", "reload")]
    finally:
        if kind == "postgresql":
            for suffix in ("", "_staging"):
                pg_admin(f'DROP SCHEMA IF EXISTS "{dataset}{suffix}" CASCADE')


def pandas(kind: str, path: Path, work: Path, rows: int) -> list[Load]:
    script = work / "pandas_load.py"
    script.write_text(PANDAS_LOAD)
    schema = f"vs_pandas_{uuid.uuid4().hex[:10]}"
    if kind == "sqlite":
        url = f"sqlite:///{work}/pandas.db"
    else:
        pg_admin(f'CREATE SCHEMA "{schema}"')
        url = pg_schema_url(schema)
    try:
        return [timed([PY, str(script), str(path), url], dict(os.environ), rows, ("pandas", kind, "first"))]
    finally:
        if kind == "postgresql":
            pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


def table(loads: list[Load]) -> str:
    """The Markdown table the README quotes: per database and load, each tool and dlt's time over ours."""
    lines = [
        "| database | load | funnelsync | dlt (merge) | pandas to_sql (replace) | dlt time / ours | our peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {(x.tool, x.database, x.load): x for x in loads}
    for database in ("sqlite", "postgresql"):
        for load in ("first", "reload"):
            mine = by.get(("funnelsync", database, load))
            if mine is None:
                continue
            peer = by.get(("dlt", database, load))
            naive = by.get(("pandas", database, load))

            def cell(x: Load | None) -> str:
                if x is None:
                    return "–"
                if x.timed_out:
                    return f"> {x.seconds:.0f} s (stopped)"
                return f"{x.seconds:.1f} s ({x.rows_per_s:,} rows/s)"

            ratio = "–"
            if peer and not (peer.timed_out and mine.timed_out):
                bound = "> " if peer.timed_out else "< " if mine.timed_out else ""
                ratio = f"{bound}{peer.seconds / mine.seconds:.2f}×"
            lines.append(
                f"| {database} | {load} | {cell(mine)} | {cell(peer)} | {cell(naive)} | {ratio} | {mine.peak_mb:.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--tools", default="funnelsync,dlt,pandas", help="comma-separated subset")
    parser.add_argument("--json", action="store_true", help="also print one BENCH_JSON line per load")
    parser.add_argument("--timeout", type=float, default=TIMEOUT, help="seconds one load may take (default 900)")
    args = parser.parse_args()
    globals()["TIMEOUT"] = args.timeout
    tools = {"funnelsync": ours, "dlt": dlt, "pandas": pandas}
    chosen = [t for t in args.tools.split(",") if t]
    unknown = set(chosen) - set(tools)
    if unknown:
        parser.error(f"unknown tool(s) {sorted(unknown)}; choose from {sorted(tools)}")
    print(f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    loads: list[Load] = []
    with tempfile.TemporaryDirectory(prefix="funnelsync-vs-peers-") as tmp:
        work = Path(tmp)
        path = work / "customers.csv"
        generate(path, args.rows)
        print(f"generated {args.rows:,} rows ({path.stat().st_size / 1e6:.0f} MB)")
        for kind in ("sqlite", "postgresql"):
            if args.only and kind != args.only:
                continue
            for tool in chosen:
                for load in tools[tool](kind, path, work, args.rows):
                    loads.append(load)
                    print(
                        f"{load.tool:10} {load.database:10} {load.load:6} {load.seconds:8.1f} s"
                        f"{' (stopped)' if load.timed_out else ''} "
                        f"{load.rows_per_s:9,} rows/s  CPU {load.cpu_seconds:7.1f} s  peak {load.peak_mb:6.0f} MB",
                        flush=True,
                    )
                    if args.json:
                        print("BENCH_JSON " + json.dumps({"bench": "vs_peers", **asdict(load)}), flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print()
    print(table(loads))


if __name__ == "__main__":
    main()
