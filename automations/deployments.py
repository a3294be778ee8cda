"""The ``run_deployment`` action's door to Prefect: the one module of this room that imports it."""

from __future__ import annotations

from typing import Any


def run_prefect_deployment(name: str, parameters: dict[str, Any], idempotency_key: str) -> str:
    """Create a run of deployment ``FLOW/DEPLOYMENT`` and return its id without waiting for it.

    The occurrence id is the run's idempotency key: Prefect answers a second request with the same key
    with the run it already made, so a delivery tried again after a crash starts no second run.
    """
    from prefect.deployments import run_deployment

    flow_run: Any = run_deployment(name=name, parameters=parameters, timeout=0, idempotency_key=idempotency_key,
                              as_subflow=False)
    return str(flow_run.id)
