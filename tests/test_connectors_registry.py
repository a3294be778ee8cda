"""The one registry of source kinds: each class declares its kind and how it is fed, every list derives from it."""

from __future__ import annotations

import pytest

from connectors.base import Connector, Feed, SettingsError, SourceKind
from connectors.push import WebhookReceiver
from connectors.registry import (
    SOURCE_KINDS,
    connector_class,
    is_connector_kind,
    kinds,
    kinds_fed,
    settings_schema,
    source_class,
)
from jobs.sync import read_by_sheet_import


@pytest.mark.parametrize("kind", sorted(SOURCE_KINDS))
def test_each_line_names_a_class_declaring_that_kind(kind: str) -> None:
    declared = source_class(kind)
    assert issubclass(declared, SourceKind) and declared.kind == kind
    assert declared.title and declared.feeds and all(isinstance(f, Feed) for f in declared.feeds)


@pytest.mark.parametrize("kind", sorted(SOURCE_KINDS))
def test_a_kind_receives_pushes_exactly_when_it_declares_so(kind: str) -> None:
    declared = source_class(kind)
    assert (Feed.PUSHED in declared.feeds) == issubclass(declared, WebhookReceiver)


@pytest.mark.parametrize("kind", sorted(SOURCE_KINDS))
def test_a_pulled_kind_is_read_by_its_connector_or_by_the_sheet_import(kind: str) -> None:
    declared = source_class(kind)
    if issubclass(declared, Connector):
        assert Feed.PULLED in declared.feeds and declared.streams and declared.settings_schema is not None
        assert connector_class(kind) is declared and not read_by_sheet_import(kind)
    else:
        assert read_by_sheet_import(kind) == (Feed.PULLED in declared.feeds)
        with pytest.raises(SettingsError, match="no connector for kind"):
            connector_class(kind)


def test_the_lists_that_used_to_be_written_out_follow_from_the_declarations() -> None:
    custom = ["api", "csv", "custom", "google_sheets"]
    assert kinds_fed(Feed.FILE) == custom and kinds_fed(Feed.API) == custom
    assert kinds_fed(Feed.PUSHED) == [
        "app_store", "braintree", "chargebee", "gocardless", "google_play", "hubspot", "intercom", "recurly", "segment",
        "stripe",
    ]
    connectors = [k for k in kinds() if is_connector_kind(k)]
    assert kinds_fed(Feed.PULLED) == sorted([*connectors, "google_sheets"])
    assert "app_store_connect" in connectors and "segment" not in kinds_fed(Feed.PULLED)
    assert settings_schema("csv") is None and {s.name for s in settings_schema("stripe") or ()} >= {"api_key"}


def test_an_unknown_kind_is_refused_with_the_known_ones() -> None:
    with pytest.raises(SettingsError, match="unknown source kind 'no-such-kind': expected one of api, app_store"):
        source_class("no-such-kind")
    assert not is_connector_kind("no-such-kind")
