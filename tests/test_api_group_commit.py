"""Group commit (``api.group_commit``) and the creates it batches (``POST /v1/customers``).

Items submitted while a batch is being written are written together next; an item that cannot be
written fails its own request only; a create is checked as if the ones before it in its batch were
already stored, so a batch answers what the same creates one after another would have.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

import api.customers
from api.group_commit import GroupCommit
from tests.api_support import api_client, new_source


def _submit(commit: GroupCommit[int], first: int, then: Sequence[int], writing: threading.Event
            ) -> list[BaseException | None]:
    """Submit ``first``, and ``then`` the others once ``writing`` says a batch is being written."""
    async def one(item: int) -> BaseException | None:
        try:
            await commit.submit(item)
        except Exception as exc:  # the test looks at what each submitter got
            return exc
        return None

    async def everyone() -> list[BaseException | None]:
        head = asyncio.ensure_future(one(first))
        while not writing.is_set():
            await asyncio.sleep(0.01)
        rest = await asyncio.gather(*(one(item) for item in then))
        return [await head, *rest]

    return asyncio.run(everyone())


def _blocking_first_batch(batches: list[list[int]], fails: Callable[[Sequence[int]], None]
                          ) -> tuple[Callable[[Sequence[int]], None], threading.Event]:
    """A write recording its batches whose first batch waits until a moment after it began."""
    writing = threading.Event()

    def write(items: Sequence[int]) -> None:
        batches.append(list(items))
        if len(batches) == 1:
            writing.set()
            time.sleep(0.3)  # the others are submitted meanwhile
        fails(items)

    return write, writing


def test_items_queued_behind_a_batch_are_written_together_and_a_failing_one_fails_alone() -> None:
    batches: list[list[int]] = []

    def fails(items: Sequence[int]) -> None:
        if 13 in items:
            raise ValueError("13 cannot be written")

    write, writing = _blocking_first_batch(batches, fails)
    outcomes = _submit(GroupCommit(write), 1, [2, 13, 4], writing)
    assert batches[0] == [1]  # written at once, alone: nothing waits for a batch to fill
    assert batches[1] == [2, 13, 4]  # the ones that came meanwhile, together; it failed, so each again alone:
    assert batches[2:] == [[2], [13], [4]]
    assert [type(outcome) for outcome in outcomes] == [type(None), type(None), ValueError, type(None)]


def test_an_error_that_would_hit_each_item_alike_is_not_retried_item_by_item() -> None:
    batches: list[list[int]] = []

    def fails(items: Sequence[int]) -> None:
        if len(batches) > 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))

    write, writing = _blocking_first_batch(batches, fails)
    commit: GroupCommit[int] = GroupCommit(write, alone_again=lambda error: not isinstance(error, OperationalError))
    outcomes = _submit(commit, 1, [2, 3], writing)
    assert batches == [[1], [2, 3]]
    assert outcomes[0] is None and all(isinstance(outcome, OperationalError) for outcome in outcomes[1:])


def test_after_a_batch_of_several_the_next_waits_for_as_many_and_a_lone_writer_never_waits() -> None:
    batches: list[list[int]] = []
    write, writing = _blocking_first_batch(batches, lambda _items: None)
    # A linger far longer than the test may take: a batch goes when it has as many items as the last one.
    commit: GroupCommit[int] = GroupCommit(write, linger_seconds=600)

    async def scenario() -> None:
        head = asyncio.ensure_future(commit.submit(1))
        while not writing.is_set():
            await asyncio.sleep(0.01)
        await asyncio.wait_for(asyncio.gather(*(commit.submit(item) for item in (2, 3, 4))), 30)
        await head
        later = []
        for item in (5, 6, 7):  # one by one, as answered clients come back
            later.append(asyncio.ensure_future(commit.submit(item)))
            await asyncio.sleep(0.05)
        await asyncio.wait_for(asyncio.gather(*later), 30)

    asyncio.run(scenario())
    assert batches == [[1], [2, 3, 4], [5, 6, 7]]

    alone: list[list[int]] = []
    lone: GroupCommit[int] = GroupCommit(alone.append, linger_seconds=600)

    async def one_by_one() -> None:
        for item in (1, 2, 3):
            await asyncio.wait_for(lone.submit(item), 30)  # each batch of one: nothing to wait for

    asyncio.run(one_by_one())
    assert alone == [[1], [2], [3]]


def test_the_writer_thread_ends_when_idle_and_comes_back() -> None:
    written: list[int] = []
    commit: GroupCommit[int] = GroupCommit(written.extend, idle_seconds=0.05)
    done = threading.Event()
    done.set()
    assert _submit(commit, 1, [], done) == [None]
    deadline = time.monotonic() + 5
    while commit._writer is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert commit._writer is None
    assert _submit(commit, 2, [], done) == [None] and written == [1, 2]


def _hold_the_database(engine):
    """A connection holding what the first batch needs (SQLite's write lock, PostgreSQL's source_customers)."""
    conn = engine.connect()
    if engine.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.begin()
        conn.execute(text("LOCK TABLE source_customers IN ACCESS EXCLUSIVE MODE"))
    return conn


def test_concurrent_creates_in_one_batch_answer_as_they_would_one_after_another(db_engine, monkeypatch) -> None:
    client = api_client(db_engine)
    ds = new_source(client)
    batch_sizes: list[int] = []
    write_batch = api.customers._create_in

    def counted(conn, creates):
        batch_sizes.append(len(creates))
        return write_batch(conn, creates)

    monkeypatch.setattr(api.customers, "_create_in", counted)
    bodies = {
        "first": {"external_id": "first"},
        "b": {"external_id": "b", "attributes": {"custom": [{"type": "Integer", "key": "seats", "value": 3}]}},
        "b again": {"external_id": "b"},
        "seats as text": {"external_id": "c", "attributes": {"custom": [{"type": "String", "key": "seats",
                                                                         "value": "three"}]}},
        "seats again": {"external_id": "d", "attributes": {"custom": {"seats": 4}}},
        "no source": {"external_id": "e", "data_source_uuid": "ds_none"},
    }
    answers: dict[str, object] = {}

    def post(name: str) -> None:
        answers[name] = client.post("/v1/customers", json={"data_source_uuid": ds, **bodies[name]})

    holder = _hold_the_database(db_engine)
    try:
        threads = [threading.Thread(target=post, args=("first",))]
        threads[0].start()
        time.sleep(0.5)  # the first create is being written: it waits for the held database
        for name in list(bodies)[1:]:
            threads.append(threading.Thread(target=post, args=(name,)))
            threads[-1].start()
            time.sleep(0.1)  # in this order in the queue
        time.sleep(0.3)
    finally:
        holder.rollback()
        holder.close()
    for thread in threads:
        thread.join(30)
    assert batch_sizes[:2] == [1, 5], batch_sizes
    status = {name: answer.status_code for name, answer in answers.items()}  # type: ignore[attr-defined]
    assert status == {"first": 201, "b": 201, "b again": 422, "seats as text": 422, "seats again": 201,
                      "no source": 422}, {name: answer.text for name, answer in answers.items()}  # type: ignore[attr-defined]
    assert "exists already" in answers["b again"].text  # type: ignore[attr-defined]
    assert "is of type Integer, not String" in answers["seats as text"].text  # type: ignore[attr-defined]
    assert answers["seats again"].json()["attributes"]["custom"] == {"seats": 4}  # type: ignore[attr-defined]
    listed = client.get("/v1/customers").json()["entries"]
    assert sorted(entry["external_id"] for entry in listed) == ["b", "d", "first"]


def test_a_create_that_breaks_its_batch_fails_alone(db_engine, monkeypatch) -> None:
    client = api_client(db_engine)
    ds = new_source(client)
    write_batch = api.customers._create_in

    batches: list[list[str]] = []

    def fragile(conn, creates):
        batches.append([create.external_id for create in creates])
        write_batch(conn, creates)
        if any(create.external_id == "breaks" for create in creates):
            raise RuntimeError("this one cannot be written")  # after the checks and the writes: all roll back

    monkeypatch.setattr(api.customers, "_create_in", fragile)
    answers: dict[str, object] = {}
    client_raising = type(client)(client.app, raise_server_exceptions=False)
    client_raising.auth = client.auth

    def post(name: str) -> None:
        # "x" repeats the first one's external id: refused in the batch, and again when written alone.
        external_id = "first" if name == "x" else name
        answers[name] = client_raising.post("/v1/customers", json={"data_source_uuid": ds,
                                                                   "external_id": external_id})

    holder = _hold_the_database(db_engine)
    try:
        threads = [threading.Thread(target=post, args=(ext,)) for ext in ("first", "ok-1", "breaks", "ok-2", "x")]
        threads[0].start()
        time.sleep(0.5)
        for thread in threads[1:]:
            thread.start()
            time.sleep(0.1)
    finally:
        holder.rollback()
        holder.close()
    for thread in threads:
        thread.join(30)
    status = {ext: answer.status_code for ext, answer in answers.items()}  # type: ignore[attr-defined]
    assert batches == [["first"], ["ok-1", "breaks", "ok-2", "first"], ["ok-1"], ["breaks"], ["ok-2"], ["first"]]
    assert status == {"first": 201, "ok-1": 201, "breaks": 500, "ok-2": 201, "x": 422}
    assert len(answers["x"].json()["errors"]) == 1  # type: ignore[attr-defined]
