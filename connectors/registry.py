"""Every kind of data source, one line each: the name a source is created with → the class that declares it.

This is the one list of kinds: which are pulled, pushed, imported from files or written through the API
is what each class declares (``connectors.base.SourceKind.feeds``), and every other list is derived
from here. Classes are imported when asked for, so listing kinds does not import every vendor module.
One line per kind keeps parallel work free of conflicts.
"""

from __future__ import annotations

import importlib
from functools import cache

from connectors.base import Connector, Feed, Setting, SettingsError, SourceKind

# kind → "module:Class"
SOURCE_KINDS: dict[str, str] = {
    "stripe": "connectors.stripe:StripeConnector",
    "chargebee": "connectors.chargebee:ChargebeeConnector",
    "recurly": "connectors.recurly:RecurlyConnector",
    "braintree": "connectors.braintree:BraintreeConnector",
    "gocardless": "connectors.gocardless:GoCardlessConnector",
    "hubspot": "connectors.hubspot:HubSpotConnector",
    "intercom": "connectors.intercom:IntercomConnector",
    "app_store_connect": "connectors.app_store_connect:AppStoreConnectConnector",
    "segment": "connectors.segment:SegmentSource",
    "app_store": "connectors.app_store_notifications:AppStoreNotificationsSource",
    "google_play": "connectors.google_play:GooglePlaySource",
    "google_sheets": "connectors.files.sheets:GoogleSheetsSource",
    "csv": "connectors.custom:CsvSource",
    "custom": "connectors.custom:CustomSource",
    "api": "connectors.custom:ApiSource",
}


def kinds() -> list[str]:
    """Every source kind, sorted."""
    return sorted(SOURCE_KINDS)


@cache
def source_class(kind: str) -> type[SourceKind]:
    """The class that declares ``kind``.

    Raises:
        SettingsError: for an unknown kind, listing the known ones.
    """
    target = SOURCE_KINDS.get(kind)
    if target is None:
        raise SettingsError(f"unknown source kind {kind!r}: expected one of {', '.join(kinds())}")
    module_name, _, class_name = target.partition(":")
    found: type[SourceKind] = getattr(importlib.import_module(module_name), class_name)
    return found


def kinds_fed(feed: Feed) -> list[str]:
    """The kinds fed the way ``feed`` says (sorted): ``kinds_fed(Feed.PULLED)`` are the ones synced."""
    return [kind for kind in kinds() if feed in source_class(kind).feeds]


def is_connector_kind(kind: str) -> bool:
    """True when ``kind`` is read by a connector of its own (not csv, custom, api, a sheet or a push)."""
    return kind in SOURCE_KINDS and issubclass(source_class(kind), Connector)


def connector_class(kind: str) -> type[Connector]:
    """The connector class of ``kind``.

    Raises:
        SettingsError: for a kind without a connector, listing the kinds that have one.
    """
    cls = source_class(kind) if kind in SOURCE_KINDS else None
    if cls is None or not issubclass(cls, Connector):
        known = [k for k in kinds() if is_connector_kind(k)]
        raise SettingsError(f"no connector for kind {kind!r}; known kinds: {', '.join(known)}")
    return cls


def settings_schema(kind: str) -> tuple[Setting, ...] | None:
    """The settings schema of ``kind`` (names, secrets, defaults such as ``base_url``); None when free-form."""
    return source_class(kind).settings_schema
