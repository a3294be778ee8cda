"""Secret references resolved at run time: a ``prefect-secret:`` reference reads its Prefect Secret block."""

from __future__ import annotations

import pytest


def test_prefect_secret_reference_reads_the_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.blocks.system import Secret

    from jobs.secrets import SecretResolutionError, resolve_settings

    class Block:
        def get(self) -> str:
            return "sk_from_block"

    def load(cls: type, name: str) -> Block:
        if name != "stripe-key":
            raise ValueError(f"Unable to find block document named {name}")
        return Block()

    monkeypatch.setattr(Secret, "load", classmethod(load))
    assert resolve_settings({"api_key": "prefect-secret:stripe-key"})["api_key"] == "sk_from_block"
    with pytest.raises(SecretResolutionError, match="'other'.*cannot be loaded"):
        resolve_settings({"api_key": "prefect-secret:other"})
