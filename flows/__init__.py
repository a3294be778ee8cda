"""Prefect flows and the plain-Python wiring of connectors to storage.

Flow modules (``flows.sync``, ``flows.imports``, ``flows.merge``,
``flows.metrics``) are thin: each task opens its own engine from ``FUNNELSYNC_DATABASE_URL`` and
calls a plain function that can be run and tested without Prefect.
"""
