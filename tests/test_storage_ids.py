"""Public ids: RFC 9562 version 7, time-ordered, ascending within a call."""

from __future__ import annotations

import time
import uuid

from storage.ids import new_uuid, new_uuids


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
