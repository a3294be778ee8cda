"""Run every benchmark once and write bench/RESULTS.md: the machine, the load, and each bench's own figures.

Each bench runs as a child process with the sizes below (``--scale`` multiplies the row counts; 1.0 is the
sizes the targets are stated at); its output is kept verbatim, so the file says exactly what was printed.
A bench that fails is recorded as failed with its last lines, and the others still run.

    python bench/run_all.py                    # full sizes (long: tens of minutes)
    python bench/run_all.py --scale 0.2 --only import_csv,vs_peers
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def sized(n: int, scale: float) -> str:
    return str(max(1000, int(n * scale)))


def benches(scale: float) -> dict[str, list[str]]:
    """Each bench's command line at this scale (what the targets measure, both databases where it takes one)."""
    return {
        "import_csv": ["import_csv.py", "--rows", sized(1_000_000, scale)],
        "upsert": ["upsert.py", "--rows", sized(1_000_000, scale)],
        # dlt's merge into SQLite re-loading an unchanged million rows runs for many minutes: it is stopped
        # and reported as stopped after this long, so one run of everything stays under an hour.
        "vs_peers": ["vs_peers.py", "--rows", sized(1_000_000, scale), "--timeout", "120"],
        "sync": ["sync.py", "--records", sized(200_000, scale)],
        "merge": ["merge.py", "--customers", sized(1_000_000, scale)],
        "metrics": ["metrics.py", "--n", sized(1_000_000, scale)],
        "api_sqlite": ["api.py", "--db", "sqlite", "--customers", sized(100_000, scale)],
        "api_postgresql": ["api.py", "--db", "postgresql", "--customers", sized(100_000, scale)],
        "automations": ["automations.py"],
    }


def machine() -> list[str]:
    from _db import POSTGRES_URL
    from sqlalchemy import create_engine, text

    try:
        engine = create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            pg = conn.execute(text("SHOW server_version")).scalar()
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - the report says why PostgreSQL is missing
        pg = f"unavailable ({type(exc).__name__})"
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return [
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- cores: {os.cpu_count()}, memory: {memory:.0f} GiB, {platform.platform()}",
        f"- Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, PostgreSQL {pg}",
        f"- commit: {_git('rev-parse', '--short', 'HEAD')}",
    ]


def _git(*args: str) -> str:
    proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return proc.stdout.strip() or "unknown"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every row count by this")
    parser.add_argument("--only", default="", help="comma-separated bench names (default: all)")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    table = benches(args.scale)
    chosen = [name for name in args.only.split(",") if name] or list(table)
    unknown = set(chosen) - set(table)
    if unknown:
        parser.error(f"unknown bench(es) {sorted(unknown)}; choose from {sorted(table)}")
    lines = [
        "# Benchmark results",
        "",
        "Written by `bench/run_all.py`; every figure below is a bench's own output.",
        "",
    ]
    lines += machine()
    lines += [
        f"- scale: {args.scale} (1.0 = the sizes the targets are stated at)",
        f"- load average before: {load()}",
        "",
    ]
    for name in chosen:
        argv = table[name]
        script = HERE / argv[0]
        if not script.exists():
            lines += [f"## {name}", "", f"not run: `bench/{argv[0]}` does not exist on this commit", ""]
            continue
        print(f"running {name}: {' '.join(argv)}", flush=True)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(script), *argv[1:]], cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        verdict = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        output = proc.stdout if proc.returncode == 0 else (proc.stdout + proc.stderr)[-4000:]
        lines += [
            f"## {name}",
            "",
            f"`python bench/{' '.join(argv)}`: {verdict} in {seconds:.0f} s, load average after {load()}",
            "",
            "```",
            output.rstrip(),
            "```",
            "",
        ]
        print(f"  {verdict} in {seconds:.0f} s", flush=True)
    lines += [f"Load average after all: {load()}", ""]
    args.output.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
