"""Prefect flows and tasks only: thin wrappers over the plain jobs of ``jobs``.

Flow modules (``flows.sync``, ``flows.imports``, ``flows.merge``, ``flows.metrics``) are thin: each task
opens its own engine from ``FUNNELSYNC_DATABASE_URL``, calls a job that runs and is tested without
Prefect, and reports through artifacts (``flows.artifacts``) and events (``flows.events``).
"""
