"""The rooms' import contracts (``[tool.importlinter]`` in pyproject.toml) hold, and a wrong import breaks them.

``lint-imports`` runs on a copy of the packages: as they are (every contract kept), then with one import
that a connector must not make (storage from a connector) and one the app must not make (a flow).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("funnelsync", "connectors", "storage", "jobs", "automations", "flows", "api", "fakes")


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), str(tree / "pyproject.toml"), "--no-cache", "--no-logo"],
        cwd=tree, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_import(module: Path, line: str) -> None:
    text = module.read_text()
    head, sep, rest = text.partition("from __future__ import annotations\n")
    module.write_text(head + sep + line + "\n" + rest)


def test_the_code_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_connector_importing_storage_breaks_its_contract(tree: Path) -> None:
    add_import(tree / "connectors" / "stripe.py", "from storage.schema import customers  # noqa: F401")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "Connectors know nothing of storage, the jobs, Prefect or the app BROKEN" in result.stdout
    assert "connectors.stripe -> storage.schema" in result.stdout


def test_the_app_importing_a_flow_breaks_its_contract(tree: Path) -> None:
    add_import(tree / "api" / "webhooks.py", "import flows.sync  # noqa: F401")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "The app imports no flows and no CLI BROKEN" in result.stdout
    assert "api.webhooks -> flows.sync" in result.stdout


def test_automations_importing_a_flow_breaks_their_contract(tree: Path) -> None:
    add_import(tree / "automations" / "rules.py", "import flows.sync  # noqa: F401")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "automations is not allowed to import flows" in result.stdout
    assert "automations.rules -> flows.sync" in result.stdout


def test_storage_importing_automations_breaks_its_contract(tree: Path) -> None:
    add_import(tree / "storage" / "outbox.py", "import automations.rules  # noqa: F401")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "Storage knows nothing of connectors, HTTP, the jobs, Prefect or the app BROKEN" in result.stdout
    assert "storage.outbox -> automations.rules" in result.stdout
