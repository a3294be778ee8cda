"""The deployments of ``prefect.yaml``, built in Python for ``funnelsync worker`` (``prefect.serve``).

``prefect.yaml`` is the source of truth for names, schedules and parameters: this module reads it, so
serving from one process and deploying to a work pool run the same deployments on the same schedules.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
PREFECT_YAML = PROJECT_DIR / "prefect.yaml"


def enter_project_dir(directory: str | None = None) -> dict[str, str]:
    """Prefect pull step (prefect.yaml): run the flow from the funnelsync project folder on this worker.

    The folder is ``directory``, else ``FUNNELSYNC_PROJECT_DIR``, else the one holding the ``flows``
    package this worker imports, so a worker with the package installed needs no setting at all.
    """
    target = directory or os.environ.get("FUNNELSYNC_PROJECT_DIR") or str(PROJECT_DIR)
    if not (Path(target) / "flows").is_dir():
        raise FileNotFoundError(f"{target} is not a funnelsync checkout (no flows/ folder): set FUNNELSYNC_PROJECT_DIR")
    os.chdir(target)
    return {"directory": target}


def deployment_specs(path: Path = PREFECT_YAML) -> list[dict[str, Any]]:
    """The ``deployments`` entries of ``prefect.yaml``."""
    with path.open(encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    return list(config.get("deployments") or [])


def load_flow(entrypoint: str) -> Any:
    """The flow object named by a ``path/to/file.py:function`` entrypoint, imported as a module."""
    import importlib

    file_part, _, func_name = entrypoint.partition(":")
    module_name = file_part.removesuffix(".py").replace("/", ".")
    return getattr(importlib.import_module(module_name), func_name)


def served_deployments(path: Path = PREFECT_YAML) -> list[Any]:
    """``RunnerDeployment`` objects for ``prefect.serve``, one per ``prefect.yaml`` entry."""
    from prefect.client.schemas.schedules import construct_schedule

    built = []
    for spec in deployment_specs(path):
        flow = load_flow(spec["entrypoint"])
        schedules = [
            construct_schedule(cron=s["cron"], timezone=s.get("timezone"))
            for s in spec.get("schedules") or []
            if s.get("active", True) and "cron" in s
        ]
        built.append(
            flow.to_deployment(
                name=spec["name"],
                description=spec.get("description"),
                tags=spec.get("tags") or [],
                parameters=spec.get("parameters") or {},
                schedules=schedules or None,
                concurrency_limit=spec.get("concurrency_limit"),
            )
        )
    return built
