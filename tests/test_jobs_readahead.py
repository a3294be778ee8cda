"""Read-ahead and GC tuning of the bulk jobs: settings apply inside, nest and restore; read-ahead keeps order
and raises errors after the items read before them."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from jobs.readahead import BULK_GC_THRESHOLD, SWITCH_INTERVAL, prefetched, rare_gc, short_switch_interval


def test_rare_gc_raises_the_threshold_and_restores_it_when_nested() -> None:
    before = gc.get_threshold()
    with rare_gc():
        assert gc.get_threshold()[0] == max(before[0], BULK_GC_THRESHOLD)
        with rare_gc():
            assert gc.get_threshold()[0] == max(before[0], BULK_GC_THRESHOLD)
        assert gc.get_threshold()[0] == max(before[0], BULK_GC_THRESHOLD)  # the outer one still holds
    assert gc.get_threshold() == before


def test_rare_gc_restores_after_an_exception() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), rare_gc():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before


def test_prefetched_shortens_the_switch_interval_only_while_it_runs() -> None:
    before = sys.getswitchinterval()
    seen = []
    for item in prefetched(iter(range(3)), 1):
        seen.append((item, sys.getswitchinterval()))
    assert [i for i, _ in seen] == [0, 1, 2]
    assert all(interval == min(before, SWITCH_INTERVAL) for _, interval in seen)
    assert sys.getswitchinterval() == before
    with short_switch_interval():
        assert sys.getswitchinterval() == min(before, SWITCH_INTERVAL)
    assert sys.getswitchinterval() == before


def test_prefetched_passes_an_exception_object_through_as_an_item() -> None:
    """An item that happens to be an exception is data, not the reader's failure."""
    error = ValueError("just a value")
    assert list(prefetched(iter([1, error, 2]), 2)) == [1, error, 2]


def test_prefetched_without_depth_reads_inline() -> None:
    assert list(prefetched(iter("abc"), 0)) == ["a", "b", "c"]


# read_in_child forks only in a process without other threads (but fork-quiet ones); pytest's may have
# some (Prefect's harness), so the child-process path is exercised in a fresh interpreter.
CHILD_SCRIPT = r'''
import json, os, sys, time
from jobs.readahead import can_read_in_child, read_in_child

def numbers(n, fail_at=None, die_at=None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"bad row {i}")
        if i == die_at:
            os._exit(7)
        yield (i, os.getpid())

out = {"can": can_read_in_child()}
items = list(read_in_child(lambda: numbers(50)))
out["order"] = [i for i, _ in items] == list(range(50))
out["other_process"] = {pid for _, pid in items} != {os.getpid()}
def until_failure(make, expected):
    got = []
    try:
        for item in read_in_child(make):
            got.append(item[0])
    except expected as exc:
        return [str(exc), got]

out["error"] = until_failure(lambda: numbers(10, fail_at=3), ValueError)
out["died"] = until_failure(lambda: numbers(10, die_at=4), RuntimeError)
reader = read_in_child(lambda: numbers(10**9))
first = next(reader)
child_pid = first[1]
reader.close()
try:
    os.kill(child_pid, 0)
    out["stopped"] = False
except ProcessLookupError:
    out["stopped"] = True
print(json.dumps(out))
'''


def test_read_in_child_reads_in_another_process_in_order_and_reports_failures() -> None:
    import json
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", CHILD_SCRIPT], capture_output=True, text=True, cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["can"] is True and out["order"] is True and out["other_process"] is True
    assert out["error"] == ["bad row 3", [0, 1, 2]]  # raised after the items before it
    assert out["died"][0] == "the reader process ended without finishing (exit code 7)"
    assert out["died"][1] == [0, 1, 2, 3]
    assert out["stopped"] is True


def test_read_in_child_falls_back_to_a_thread_while_other_threads_run() -> None:
    import threading

    from jobs.readahead import can_read_in_child, read_in_child

    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        assert can_read_in_child() is False
        assert list(read_in_child(lambda: iter(range(20)))) == list(range(20))
    finally:
        release.set()
        other.join()


def test_records_pickle_as_tuples_and_come_back_equal() -> None:
    import pickle
    from datetime import datetime, timezone

    from connectors.files.rows import RowError, RowResult
    from funnelsync.records import ContactRecord, SourceCustomerRecord, SubscriptionFact

    when = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    record = SourceCustomerRecord(
        external_id="c1", name="Ada", email="ada@example.com", company="AE", country="GB", state="LDN",
        city="London", zip="N1", website_url="https://ae.example", owner="bob", lead_status="Working_Lead",
        lead_created_at=when, free_trial_started_at=when,
        subscriptions=[SubscriptionFact("s1", "active", trial_started_at=when, first_paid_at=when)],
        contacts=[ContactRecord(external_id="p1", first_name="Ada", custom={"k": 1}, position=2)],
        tags=["a", "b"], custom={"plan": "pro", "seats": 3}, raw={"id": "c1"},
    )
    result = RowResult(7, record, [RowError(7, "Email", "x", "bad")], True, ["c1", "Ada"])
    back = pickle.loads(pickle.dumps(result))
    assert back == result and back.record == record and back.record is not record
    assert type(back.record.subscriptions[0]) is SubscriptionFact and back.record.contacts[0].custom == {"k": 1}


# --- order and errors of the read-ahead (the sync's batches) ----------------------------------------


def numbers(n: int, fail_at: int | None = None) -> Iterator[int]:
    for i in range(n):
        if i == fail_at:
            raise RuntimeError(f"boom at {i}")
        yield i


@pytest.mark.parametrize("depth", [0, 1, 2, 5])
def test_prefetched_keeps_order(depth: int) -> None:
    assert list(prefetched(numbers(50), depth)) == list(range(50))


def test_prefetched_raises_after_earlier_items() -> None:
    got: list[int] = []
    with pytest.raises(RuntimeError, match="boom at 3"):
        got.extend(prefetched(numbers(10, fail_at=3)))
    assert got == [0, 1, 2]


def test_prefetched_consumer_can_stop_early() -> None:
    source = numbers(1000)
    for item in prefetched(source, 2):
        if item == 5:
            break
    # The reader stopped: it read at most the few items the buffer holds, not all 1000.
    assert len(list(source)) > 900
