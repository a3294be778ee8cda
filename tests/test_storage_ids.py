"""Public ids: RFC 9562 version 7, time-ordered, ascending within a call; blocks of primary keys."""

from __future__ import annotations

import time
import uuid

from sqlalchemy import text

from storage.ids import allocate_ids, new_uuid, new_uuids


def test_public_ids_are_version_7_uuids_with_their_prefix_and_creation_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = new_uuids("cus", 2000)
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 2000
    variants = set()
    for public_id in ids:
        prefix, _, text = public_id.partition("_")
        assert prefix == "cus"
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical lower-case 8-4-4-4-12
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after  # the first 48 bits: Unix time in milliseconds
        variants.add(text[19])
    assert variants == set("89ab")  # the two variant bits leave the other two random
    assert ids == sorted(ids)


def test_ids_made_later_sort_later() -> None:
    first = new_uuid("cus")
    time.sleep(0.002)
    assert new_uuids("cus", 3)[0] > first
    assert new_uuids("con", 0) == []



def test_reserved_ids_follow_the_last_block(db_engine) -> None:
    with db_engine.begin() as conn:
        assert allocate_ids(conn, "customers", 0) == []
        first = allocate_ids(conn, "customers", 3)
        second = allocate_ids(conn, "customers", 2)
    with db_engine.begin() as conn:
        third = allocate_ids(conn, "customers", 1)
    assert first == list(range(first[0], first[0] + 3)) and first[0] >= 1
    assert second == list(range(second[0], second[0] + 2)) and second[0] > first[-1]
    assert third[0] > second[-1]


def test_sqlite_never_hands_out_the_id_of_a_row_written_without_a_block(sqlite_engine) -> None:
    # A row inserted with an id of its own (a restored backup, a hand-made row): the block moves past it.
    with sqlite_engine.begin() as conn:
        before = allocate_ids(conn, "data_sources", 1)
        conn.execute(text("INSERT INTO data_sources (id, uuid, name, kind, settings, enabled, created_at) "
                          "VALUES (:id, 'ds_x', 'x', 'api', '{}', 1, 0)"), {"id": before[0] + 100})
        after = allocate_ids(conn, "data_sources", 2)
    assert after == [before[0] + 101, before[0] + 102]
