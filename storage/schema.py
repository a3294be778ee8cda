"""The database schema (SQLAlchemy Core tables) for every entity of the data model.

Core tables rather than ORM classes: every hot path writes batches with ``insert().on_conflict_…`` and
executemany, which the ORM would only slow down many times over.

Design notes:
- ``source_customers`` hold what each source last said; ``customers`` hold the *projection* (effective
  values computed from the linked source customers, their subscriptions and the manual edits). The
  projection columns are stored so metrics group over one table with plain indexes.
- A customer merged away is deleted from ``customers``; its row, edits and links live on in the merge
  event's snapshot so the merge can be undone (same id and uuid come back).
- ``customer_tags`` and ``customer_attributes`` repeat the projected tags and custom attributes in a
  shape both databases can filter on with plain SQL (no JSON operators that differ between them).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from storage.types import UTCDateTime

# Stable constraint names so Alembic migrations work the same on SQLite (batch mode) and PostgreSQL.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

def profile_columns(*, indexed: bool) -> list[Column]:  # type: ignore[type-arg]
    """The profile fields a source reports and the projection stores, for both tables.

    ``customers`` (``indexed=True``) also keeps the indexed matching keys of merges: the normalised
    email and the website domain.
    """
    columns = [
        Column("name", String(255)),
        Column("email", String(320)),
        Column("email_norm", String(320), index=indexed),
        Column("company", String(255)),
        Column("country", String(2)),
        Column("state", String(100)),
        Column("city", String(255)),
        Column("zip", String(40)),
        Column("website_url", String(2048)),
    ]
    if indexed:
        columns.append(Column("website_domain", String(255), index=True))
    columns += [Column("owner", String(320)), Column("lead_status", String(40))]
    return columns


# Integer ids (BigInteger on PostgreSQL, plain INTEGER PRIMARY KEY rowid on SQLite).
IdType = BigInteger().with_variant(Integer(), "sqlite")

data_sources = Table(
    "data_sources",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("uuid", String(40), nullable=False, unique=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("kind", String(40), nullable=False),
    # Settings never hold a secret in clear: secret settings name an env var or a Prefect Secret block.
    Column("settings", JSON, nullable=False, default=dict),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime, nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("uuid", String(40), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # --- projected (effective) values ---
    *profile_columns(indexed=True),
    Column("status", String(40), nullable=False, default="New_Lead"),
    Column("lead_created_at", UTCDateTime),
    Column("free_trial_started_at", UTCDateTime),
    Column("subscriber_since", UTCDateTime),
    Column("tags", JSON, nullable=False, default=list),
    Column("custom", JSON, nullable=False, default=dict),
    # True when at least one linked source customer carries subscription facts (merge survivorship).
    Column("has_subscriptions", Boolean, nullable=False, default=False),
)

# Metrics (storage/metrics.py) scan one date column per family over a period range and need a second
# date of the same row: these composite indexes make each scan index-only (migration 0004). Their first
# column also serves every plain range filter on that date.
# A large import drops and rebuilds them around its writes (storage/bulk_load.py).
METRIC_INDEXES = (
    Index("ix_customers_lead_created_at_free_trial_started_at", customers.c.lead_created_at,
          customers.c.free_trial_started_at),
    Index("ix_customers_free_trial_started_at_subscriber_since", customers.c.free_trial_started_at,
          customers.c.subscriber_since),
    Index("ix_customers_subscriber_since_lead_created_at", customers.c.subscriber_since,
          customers.c.lead_created_at),
)

source_customers = Table(
    "source_customers",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("data_source_id", IdType, ForeignKey("data_sources.id", ondelete="CASCADE"), nullable=False),
    Column("external_id", String(255), nullable=False),
    Column("customer_id", IdType, ForeignKey("customers.id"), nullable=False, index=True),
    # When this source customer was linked to its current customer: the projection reads fields from
    # the earliest-linked source customer first, so a merge survivor's own values win.
    Column("linked_at", UTCDateTime, nullable=False),
    *profile_columns(indexed=False),
    Column("lead_created_at", UTCDateTime),
    Column("free_trial_started_at", UTCDateTime),
    Column("tags", JSON, nullable=False, default=list),
    Column("custom", JSON, nullable=False, default=dict),
    Column("raw", JSON),
    # Digest of everything above that the record carries (raw excluded): equal digest = unchanged.
    Column("fingerprint", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # Digest of the file row this record was last written from (its raw values and how they were read),
    # null when the last write came from elsewhere: a re-import skips a row whose digest is this one.
    Column("row_fingerprint", String(32)),
    UniqueConstraint("data_source_id", "external_id"),
)
Index("ix_source_customers_external_id", source_customers.c.external_id)
# An import row without an external id finds its source's record by normalised email (migration 0007).
Index("ix_source_customers_email_norm_data_source_id", source_customers.c.email_norm,
      source_customers.c.data_source_id)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", IdType, primary_key=True),
    Column(
        "source_customer_id", IdType, ForeignKey("source_customers.id", ondelete="CASCADE"), nullable=False
    ),
    Column("external_id", String(255), nullable=False),
    Column("state", String(20), nullable=False),
    Column("trial_started_at", UTCDateTime),
    Column("trial_ended_at", UTCDateTime),
    Column("first_paid_at", UTCDateTime),
    Column("cancelled_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("source_customer_id", "external_id"),
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("uuid", String(40), nullable=False, unique=True),
    Column("customer_id", IdType, ForeignKey("customers.id"), nullable=False, index=True),
    # Set for contacts a source reported (re-synced with it); null for contacts added by hand.
    Column("source_customer_id", IdType, ForeignKey("source_customers.id", ondelete="CASCADE")),
    Column("contact_key", String(400)),
    Column("external_id", String(255)),
    Column("first_name", String(255)),
    Column("last_name", String(255)),
    Column("title", String(255)),
    Column("email", String(320)),
    Column("phone", String(100)),
    Column("linked_in", String(2048)),
    Column("twitter", String(255)),
    Column("notes", Text),
    Column("custom", JSON, nullable=False, default=dict),
    Column("position", Integer, nullable=False, default=1),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("source_customer_id", "contact_key"),
)

manual_edits = Table(
    "manual_edits",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("customer_id", IdType, ForeignKey("customers.id"), nullable=False),
    # A projected field name ("lead_created_at", "owner", ...), "custom.<key>", or "tag.<name>"
    # (value true = tag added by hand, false = removed by hand).
    Column("field", String(300), nullable=False),
    # JSON-encoded value; datetimes as ISO 8601 strings with offset.
    Column("value", JSON),
    Column("actor", String(255), nullable=False, default="cli"),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("customer_id", "field"),
)

merge_events = Table(
    "merge_events",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("uuid", String(40), nullable=False, unique=True),
    Column("kind", String(10), nullable=False, default="merge"),  # merge | unmerge
    Column("from_customer_uuid", String(40), nullable=False),
    Column("into_customer_uuid", String(40), nullable=False, index=True),
    Column("rule", String(40)),  # manual | email | external_id | domain
    Column("actor", String(255), nullable=False, default="cli"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("snapshot", JSON, nullable=False, default=dict),
    Column("undone_at", UTCDateTime),
)

sync_state = Table(
    "sync_state",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("data_source_id", IdType, ForeignKey("data_sources.id", ondelete="CASCADE"), nullable=False),
    Column("stream", String(100), nullable=False),
    # The cursor committed with the last batch (a small dict: never a list of seen ids).
    Column("cursor", JSON),
    Column("last_success_at", UTCDateTime),
    Column("last_run_counts", JSON),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("data_source_id", "stream"),
)

import_jobs = Table(
    "import_jobs",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("uuid", String(40), nullable=False, unique=True),
    Column("data_source_id", IdType, ForeignKey("data_sources.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(20), nullable=False),  # csv | structured | sheet | bulk_edit
    Column("filename", String(1024)),
    # running | done | failed | interrupted (its process died; the next run of the file resumed it)
    Column("status", String(20), nullable=False, default="running"),
    Column("created", Integer, nullable=False, default=0),
    Column("updated", Integer, nullable=False, default=0),
    Column("unchanged", Integer, nullable=False, default=0),
    Column("rejected", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    # The process running the job and its last committed batch: a running job whose process is gone
    # is interrupted (jobs.import_jobs).
    Column("pid", Integer),
    Column("host", String(255)),
    Column("heartbeat_at", UTCDateTime),
)

import_rejections = Table(
    "import_rejections",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("import_job_id", IdType, ForeignKey("import_jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("row_number", Integer, nullable=False),
    Column("column", String(255)),
    Column("value", Text),
    Column("reason", Text, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("name", String(255), nullable=False),
    # SHA-256 of the key: keys are 256-bit random tokens, so a slow password hash buys nothing.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("prefix", String(12), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

custom_attribute_definitions = Table(
    "custom_attribute_definitions",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("type", String(20), nullable=False),  # String | Integer | Decimal | Timestamp | Boolean
    Column("created_at", UTCDateTime, nullable=False),
)

customer_tags = Table(
    "customer_tags",
    metadata,
    Column("customer_id", IdType, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(255), primary_key=True),
)
Index("ix_customer_tags_tag", customer_tags.c.tag)

customer_attributes = Table(
    "customer_attributes",
    metadata,
    Column("customer_id", IdType, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value_text", Text),
    Column("value_number", Float),
    Column("value_time", UTCDateTime),
    Column("value_bool", Boolean),
)
Index("ix_customer_attributes_key_text", customer_attributes.c.key, customer_attributes.c.value_text)

# Hands out integer ids in blocks on SQLite (PostgreSQL uses the tables' sequences), so a batch can
# insert customers and their source customers without a RETURNING round trip per row.
id_blocks = Table(
    "id_blocks",
    metadata,
    Column("table_name", String(64), primary_key=True),
    Column("next_id", IdType, nullable=False),
)

# Fingerprint of each row a sheet import applied, per source and worksheet ("stream"), so the next run
# applies only changed rows. One row per sheet row currently present (rows gone from the sheet are
# deleted), so it never grows beyond the sheet itself, unlike a JSON blob of every key ever seen.
import_row_fingerprints = Table(
    "import_row_fingerprints",
    metadata,
    Column("data_source_id", IdType, ForeignKey("data_sources.id", ondelete="CASCADE"), primary_key=True),
    Column("stream", String(255), primary_key=True),
    Column("row_key", String(400), primary_key=True),
    Column("fingerprint", String(32), nullable=False),
)

# One sync per source at a time, held in the database so it also holds when no Prefect server is
# reachable and across workers on different machines. A row is a held lock; ``expires_at`` is pushed
# forward by the holder's heartbeat, so a crashed holder's lock lapses on its own (storage/locks.py).
source_locks = Table(
    "source_locks",
    metadata,
    Column("lock_key", String(200), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# The lifecycle dates last announced per customer (as Prefect events by the flows), so a re-sync only
# announces what changed: a date going from none to a value is "lead created", "trial started" or
# "converted" (storage/lifecycle.py). Deleted with the customer (a merged-away one announces nothing).
lifecycle_marks = Table(
    "lifecycle_marks",
    metadata,
    Column("customer_id", IdType, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True),
    Column("lead_created_at", UTCDateTime),
    Column("free_trial_started_at", UTCDateTime),
    Column("subscriber_since", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Automated workflows (automations/). The rules as applied from a rule file or the API: every worker
# reads the same ones. ``definition`` is the validated rule (secrets only as references, never in clear).
automation_rules = Table(
    "automation_rules",
    metadata,
    Column("id", IdType, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("trigger", String(40), nullable=False),
    Column("definition", JSON, nullable=False),
    # Occurrences detected from this moment on fire (a rule does not fire for the past but by backfill).
    Column("applied_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# What detection last saw of each customer, so a change fires once: a date going from none to a value,
# a status differing from the one seen. Written in the transaction of the change that caused it. Deleted
# with the customer: a merge hands the survivor the earliest of both (the marks of the merged-away one).
automation_marks = Table(
    "automation_marks",
    metadata,
    Column("customer_id", IdType, ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True),
    Column("lead_created_at", UTCDateTime),
    Column("free_trial_started_at", UTCDateTime),
    Column("subscriber_since", UTCDateTime),
    Column("status", String(40)),
    # How many status changes were seen: part of a status change's occurrence id, so A→B, B→A, A→B
    # fires three times and a replayed batch none.
    Column("status_seq", Integer, nullable=False, default=0),
)

# One row per (rule, customer, trigger, discriminator): its id is a digest of those four, so detecting
# the same occurrence again inserts nothing. The customer is named by uuid: it outlives a merge.
automation_occurrences = Table(
    "automation_occurrences",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("rule_name", String(100), nullable=False, index=True),
    Column("trigger", String(40), nullable=False),
    Column("customer_uuid", String(40), nullable=False, index=True),
    Column("discriminator", String(200), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("detected_at", UTCDateTime, nullable=False),
)

# The outbox: one delivery per action of an occurrence (pending → delivered | failed). Written only
# with its occurrence, in the same statement, and occurrences are never deleted: no foreign key, whose
# check per row was most of the cost of enqueueing a large import.
automation_deliveries = Table(
    "automation_deliveries",
    metadata,
    Column("occurrence_id", String(40), primary_key=True),
    Column("action_index", Integer, primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("status", String(10), nullable=False, default="pending"),  # pending | delivered | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_error", Text),
    Column("delivered_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index("ix_automation_deliveries_status_next_attempt_at", automation_deliveries.c.status,
      automation_deliveries.c.next_attempt_at)

# Funnel counts per UTC hour and country, kept by triggers on ``customers`` (storage/metric_counts.py):
# the metrics read these instead of scanning every customer. ``family`` is 1 leads, 2 free trials,
# 3 new subscribers; ``n`` the customers whose date falls in the hour, ``k`` those of them that are
# also a lead with a trial / a converted trial / a new subscriber in the sales cycle; ``cycle_s`` and
# ``cycle_us`` the summed cycle lengths (whole seconds and the microsecond remainders, so sums stay exact
# integers). ``country`` is '' for none. PostgreSQL writers append to ``metric_count_deltas`` (no row
# locks shared between concurrent writers); readers add them and fold them in from time to time.
def _metric_count_columns() -> list[Column]:  # type: ignore[type-arg]
    return [
        Column("family", Integer, nullable=False),
        Column("at", UTCDateTime, nullable=False),
        Column("country", String(2), nullable=False),
        Column("n", BigInteger, nullable=False),
        Column("k", BigInteger, nullable=False),
        Column("cycle_s", BigInteger, nullable=False),
        Column("cycle_us", BigInteger, nullable=False),
    ]


metric_counts = Table(
    "metric_counts",
    metadata,
    *_metric_count_columns(),
    PrimaryKeyConstraint("family", "at", "country"),
)

metric_count_deltas = Table("metric_count_deltas", metadata, *_metric_count_columns())
