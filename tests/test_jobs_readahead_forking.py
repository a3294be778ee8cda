"""The file reader forks while a lock is held: the lock's heartbeat is a fork-quiet thread
(``funnelsync.forking``), any other thread still keeps the reader on a thread, and a fork waits for a
beat under way.

Each case runs in a fresh interpreter: pytest's own process may run threads of its own (Prefect's
harness), and a fork there would prove nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, select

from jobs.imports import CHILD_READER_MIN_ROWS
from storage.db import make_engine, upgrade

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str, env: dict[str, str] | None = None) -> Any:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", **(env or {})},
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


UNDER_A_LOCK = r'''
import json, os, sys, threading
from jobs.readahead import can_read_in_child, read_in_child
from storage.db import make_engine
from storage.locks import hold_lock

def producers(n):
    for i in range(n):
        yield (i, os.getpid())

engine = make_engine(sys.argv[1])
out = {}
with hold_lock(engine, "import:name:leads", "PID 1 on test (funnelsync import)"):
    out["threads"] = sorted(t.name for t in threading.enumerate())
    out["can"] = can_read_in_child()
    items = list(read_in_child(lambda: producers(50)))
    out["order"] = [i for i, _ in items] == list(range(50))
    out["producers"] = sorted({pid for _, pid in items})
    if sys.argv[2] == "with another thread":
        release = threading.Event()
        other = threading.Thread(target=release.wait, name="someone-else")
        other.start()
        out["can_with_another"] = can_read_in_child()
        out["producers_with_another"] = sorted({pid for _, pid in read_in_child(lambda: producers(20))})
        release.set()
        other.join()
out["me"] = os.getpid()
print(json.dumps(out))
'''


def test_while_a_lock_is_held_the_reader_runs_in_another_process(db_url: str) -> None:
    out = _run(UNDER_A_LOCK, db_url, "alone")
    assert out["threads"] == ["MainThread", "lock-heartbeat:import:name:leads"]
    assert out["can"] is True and out["order"] is True
    assert len(out["producers"]) == 1 and out["producers"] != [out["me"]]


def test_another_thread_keeps_the_reader_on_a_thread_even_under_a_lock(sqlite_engine: Engine) -> None:
    out = _run(UNDER_A_LOCK, sqlite_engine.url.render_as_string(hide_password=False), "with another thread")
    assert out["can"] is True  # the heartbeat alone
    assert out["can_with_another"] is False and out["producers_with_another"] == [out["me"]]


# The first beat is held inside its UPDATE until the parent says it has forked, or for 3 s. Without the
# guard the fork happens at once and the beat hears of it; with it the fork waits the 3 s, so the beat
# never hears of it, and the child's copy of the process shows no statement under way.
FORK_DURING_A_BEAT = r'''
import json, os, sys, threading
from sqlalchemy import event
from funnelsync.forking import ForkQuietThread
from storage.db import make_engine
from storage.locks import hold_lock

engine = make_engine(sys.argv[1])
in_statement = threading.Event()
forked = threading.Event()
beat = {"in_statement": False, "heard_of_the_fork": None}

@event.listens_for(engine, "before_cursor_execute")
def slow_first_beat(conn, cursor, statement, parameters, context, executemany):
    if threading.current_thread().name.startswith("lock-heartbeat") and beat["heard_of_the_fork"] is None \
            and statement.lstrip().upper().startswith("UPDATE"):
        beat["in_statement"] = True
        in_statement.set()
        beat["heard_of_the_fork"] = forked.wait(timeout=3)
        beat["in_statement"] = False

with hold_lock(engine, "import:name:leads", "PID 1 on test (funnelsync import)", ttl_seconds=0.03):
    assert in_statement.wait(timeout=60)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        stepped = threading.Event()
        # The child's guard is free: a fork-quiet thread of its own gets to step.
        ForkQuietThread(stepped.set, 0.01, name="child-step").start()
        seen = {"in_statement": beat["in_statement"], "child_stepped": stepped.wait(timeout=30)}
        os.write(write_end, json.dumps(seen).encode())
        os._exit(0)
    forked.set()
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)
print(json.dumps({"child": child, "heard_of_the_fork": beat["heard_of_the_fork"]}))
'''


def test_a_fork_waits_for_a_beat_under_way(db_url: str) -> None:
    out = _run(FORK_DURING_A_BEAT, db_url)
    assert out["heard_of_the_fork"] is False
    assert out["child"] == {"in_statement": False, "child_stepped": True}


STEP_THAT_FORKS = r'''
import json, os, threading
from funnelsync.forking import ForkQuietThread

done = threading.Event()
status = []

def step():
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    status.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
    done.set()

thread = ForkQuietThread(step, 0.01, name="forking-step")
thread.start()
print(json.dumps({"done": done.wait(timeout=30), "status": status[:1]}))
thread.stop(timeout=5)
'''


def test_a_step_that_forks_does_not_wait_for_itself() -> None:
    assert _run(STEP_THAT_FORKS) == {"done": True, "status": [3]}


# ---- the command a user runs: `funnelsync import csv`, under the source's lock (jobs.runs.run_import)

CLI_IMPORT = r'''
import json, os, sys
import jobs.imports as imports
import jobs.readahead as readahead

file, producer_file, how = sys.argv[1:4]
spied = {"decisions": []}
real = imports.read_in_child

def spying(make, depth=2):
    spied["decisions"].append(readahead.can_read_in_child())

    def noting_the_producer():
        with open(producer_file, "w", encoding="utf-8") as handle:
            handle.write(str(os.getpid()))
        return make()

    return real(noting_the_producer, depth)

imports.read_in_child = spying
if how == "on a thread":
    readahead.can_read_in_child = lambda: False
sys.argv = ["funnelsync", "import", "csv", file, "--source", "leads", "--json"]
from funnelsync.cli import main
code = None
try:
    main()
except SystemExit as exc:
    code = exc.code
with open(os.environ["SPY_FILE"], "w", encoding="utf-8") as handle:
    json.dump({**spied, "code": code, "me": os.getpid()}, handle)
'''

# What an import writes that does not depend on when it ran (uuids are random, times are now).
VOLATILE = {"uuid", "created_at", "updated_at", "linked_at", "started_at", "finished_at", "heartbeat_at",
            "pid", "host", "job_id"}
TABLES = ("customers", "source_customers", "lifecycle_marks", "subscriptions", "contacts", "customer_tags",
          "customer_attributes", "import_rejections", "import_row_fingerprints", "custom_attribute_definitions")


def _stored(url: str) -> dict[str, list[str]]:
    from storage.schema import metadata

    engine = create_engine(url)
    stored = {}
    with engine.connect() as conn:
        for name in TABLES:
            table = metadata.tables[name]
            columns = [c for c in table.c if c.name not in VOLATILE]
            stored[name] = sorted(repr(tuple(row)) for row in conn.execute(select(*columns)))
    engine.dispose()
    return stored


def _leads(path: Path, rows: int) -> None:
    lines = ["Customer ID,Name,Email,Country,Signup Date,Trial Start"]
    for i in range(rows):
        lines.append(f"c{i},Person {i},p{i}@example{i % 97}.com,{('US', 'DE', 'FR')[i % 3]},"
                     f"2024-{1 + i % 12:02d}-{1 + i % 28:02d},{'2024-06-01T10:00:00Z' if i % 5 == 0 else ''}")
    lines[100] = "c42,Again,again@example.com,US,2024-03-01,"  # a repeated key: rejected
    lines[200] = "c199,Bad date,bad@example.com,US,2024-13-45,"  # rejected
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_funnelsync_import_csv_reads_in_a_child_under_its_lock_with_the_same_outcome(tmp_path: Path) -> None:
    rows = CHILD_READER_MIN_ROWS
    path = tmp_path / "leads.csv"
    _leads(path, rows)
    outcomes = {}
    for how in ("in a child", "on a thread"):
        url = f"sqlite:///{tmp_path / (how.replace(' ', '-') + '.db')}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        spy = tmp_path / f"{how}.spy.json"
        producer = tmp_path / f"{how}.producer"
        done = subprocess.run(
            [sys.executable, "-c", CLI_IMPORT, str(path), str(producer), how], capture_output=True, text=True,
            cwd=ROOT, timeout=300, check=False,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "FUNNELSYNC_HOME": str(tmp_path),
                 "FUNNELSYNC_DATABASE_URL": url, "SPY_FILE": str(spy)},
        )
        seen = json.loads(spy.read_text(encoding="utf-8"))
        assert seen["code"] == 3, done.stderr  # imported, with rejected rows
        summary = json.loads(done.stdout)
        summary.pop("job_uuid", None)
        outcomes[how] = (summary, _stored(url))
        if how == "in a child":
            assert seen["decisions"] == [True]
            assert int(producer.read_text()) != seen["me"]  # the rows were parsed in another process
        else:
            assert seen["decisions"] == [False] and int(producer.read_text()) == seen["me"]
    child, thread = outcomes["in a child"], outcomes["on a thread"]
    assert child[0]["created"] == rows - 2 and child[0]["rejected"] == 2
    assert child == thread
