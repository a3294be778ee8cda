"""Storage: the SQLAlchemy schema, migrations, upserts, projection, merges and metrics queries.

Knows nothing of HTTP or Prefect; speaks the record model of ``funnelsync.records``.
"""
