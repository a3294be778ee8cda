"""How detection reads the database, on real SQLite and PostgreSQL: which data sources the external-id rule
looks up, and the index-order grouping PostgreSQL uses once VACUUM has marked the pages all-visible."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from funnelsync.records import SourceCustomerRecord
from storage.duplicates import _sources_largest_first, _tune_postgres_for_grouping, find_duplicate_groups
from storage.sources import create_source
from storage.upsert import upsert_records

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_external_id_rule_looks_up_a_source_the_statistics_do_not_list_yet(db_engine: Engine) -> None:
    """On PostgreSQL the sources are ranked by the planner's statistics; a source added after the last
    ANALYZE is missing from them and must still be looked up, or a record it shares with the largest
    source (the one left out of the lookups) would never be found."""
    with db_engine.begin() as conn:
        big = create_source(conn, "crm", "custom").id
        small = create_source(conn, "billing", "stripe").id
        upsert_records(conn, big, [SourceCustomerRecord(external_id=f"id-{i}", email=f"lead{i}@crm.io")
                                   for i in range(40)], now=NOW)
        upsert_records(conn, small, [SourceCustomerRecord(external_id=f"b-{i}", email=f"sub{i}@pay.io")
                                     for i in range(3)], now=NOW)
    if db_engine.dialect.name == "postgresql":
        with db_engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE source_customers")
            conn.commit()
    with db_engine.begin() as conn:
        late = create_source(conn, "sheet", "google_sheets").id
        upsert_records(conn, late, [SourceCustomerRecord(external_id="id-7", email="someone@else.io")], now=NOW)
        ranked = _sources_largest_first(conn)
        groups = find_duplicate_groups(conn, ["external_id"])
    assert ranked[0] == big and set(ranked) >= {big, small, late}
    assert [(g.rule, g.keys, len(g.members)) for g in groups] == [("external_id", {"external_id": ["id-7"]}, 2)]


def test_postgres_groups_in_index_order_only_once_pages_are_all_visible(db_engine: Engine) -> None:
    """Before VACUUM an index-only scan would visit the heap for every entry, so the hash aggregate stays;
    after it, detection turns hashing off for its own transaction and puts the setting back."""
    with db_engine.begin() as conn:
        source = create_source(conn, "crm", "custom").id
        upsert_records(conn, source, [SourceCustomerRecord(external_id=f"{i}", email=f"p{i % 50}@x.io")
                                      for i in range(200)], now=NOW)
    if db_engine.dialect.name == "sqlite":
        with db_engine.connect() as conn:
            assert _tune_postgres_for_grouping(conn) == {}
        return

    def hashagg_during_detection() -> tuple[str, str]:
        with db_engine.begin() as conn:
            restore = _tune_postgres_for_grouping(conn)
            during = conn.exec_driver_sql("SELECT current_setting('enable_hashagg')").scalar()
            for name, value in restore.items():
                conn.exec_driver_sql("SELECT set_config(%s, %s, true)", (name, value))
            after = conn.exec_driver_sql("SELECT current_setting('enable_hashagg')").scalar()
        return during, after

    assert hashagg_during_detection() == ("on", "on")
    with db_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE customers")
    assert hashagg_during_detection() == ("off", "on")
    with db_engine.connect() as conn:
        assert len(find_duplicate_groups(conn, ["email"])) == 50
