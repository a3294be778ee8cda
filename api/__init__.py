"""The HTTP API (FastAPI): import API, push receivers, dashboard."""
