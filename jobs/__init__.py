"""The plain jobs every door calls (the CLI, the HTTP API, the Prefect flows): no Prefect here."""
