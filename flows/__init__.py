"""Prefect flows and the plain-Python wiring of connectors to storage.

Flow modules (``flows.sync_flows``, ``flows.import_flows``, ``flows.merge_flows``,
``flows.metrics_flows``) are thin: each task opens its own engine from ``FUNNELSYNC_DATABASE_URL`` and
calls a plain function that can be run and tested without Prefect.
"""
