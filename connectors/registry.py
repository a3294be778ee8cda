"""Connector kinds: the name a source is created with → the class that reads it.

Classes are imported lazily so listing kinds or validating settings does not import every vendor
module. One line per kind keeps parallel work free of conflicts.
"""

from __future__ import annotations

import importlib

from connectors.base import Connector, Setting, SettingsError

# kind → "module:Class"
CONNECTORS: dict[str, str] = {
    "stripe": "connectors.stripe:StripeConnector",
    "chargebee": "connectors.chargebee:ChargebeeConnector",
    "recurly": "connectors.recurly:RecurlyConnector",
    "braintree": "connectors.braintree:BraintreeConnector",
    "gocardless": "connectors.gocardless:GoCardlessConnector",
    "hubspot": "connectors.hubspot:HubSpotConnector",
    "intercom": "connectors.intercom:IntercomConnector",
    "app_store_connect": "connectors.app_store_connect:AppStoreConnectConnector",
}


def kinds() -> list[str]:
    """Every registered connector kind, sorted."""
    return sorted(CONNECTORS)


def is_connector_kind(kind: str) -> bool:
    """True when ``kind`` is pulled by a registered connector (not csv, custom, api…)."""
    return kind in CONNECTORS


def connector_class(kind: str) -> type[Connector]:
    """The connector class of ``kind``.

    Raises:
        SettingsError: for an unknown kind, listing the known ones.
    """
    target = CONNECTORS.get(kind)
    if target is None:
        raise SettingsError(f"no connector for kind {kind!r}; known kinds: {', '.join(kinds())}")
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


def settings_schema(kind: str) -> tuple[Setting, ...]:
    """The settings schema of ``kind`` (names, secrets, defaults such as ``base_url``)."""
    return connector_class(kind).settings_schema
