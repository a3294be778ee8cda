"""Two writers registering the same new custom attribute key at once (concurrent ``POST /v1/customers``).

The second writer's insert waits for the first one's transaction (SQLite's write lock, PostgreSQL's unique
index) and then finds the key there: it must get the registered type back, not a unique-key error.
"""

from __future__ import annotations

import threading
import time

from storage.projection import attribute_types, register_attribute_types


def test_a_key_registered_meanwhile_by_another_writer_is_reported_not_an_error(db_engine):
    results: list[dict[str, str]] = []
    errors: list[BaseException] = []
    first = db_engine.connect()
    first.begin()
    assert register_attribute_types(first, {"seats": "Integer"}) == {}

    def second_writer() -> None:
        try:
            with db_engine.begin() as conn:
                results.append(register_attribute_types(conn, {"seats": "String", "plan": "String"}))
        except BaseException as exc:  # reported to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=second_writer)
    thread.start()
    time.sleep(0.5)  # the second writer is now waiting for the first one's transaction
    first.commit()
    first.close()
    thread.join(timeout=30)
    assert not errors, errors
    assert results == [{"seats": "Integer"}]
    with db_engine.connect() as conn:
        assert attribute_types(conn) == {"seats": "Integer", "plan": "String"}


def test_the_same_type_registered_twice_is_no_conflict(db_engine):
    with db_engine.begin() as conn:
        assert register_attribute_types(conn, {"seats": "Integer"}) == {}
    with db_engine.begin() as conn:
        assert register_attribute_types(conn, {"seats": "Integer", "plan": "String"}) == {}
        assert attribute_types(conn) == {"seats": "Integer", "plan": "String"}
