"""Fake vendor APIs for respx: they really page, filter and check credentials, with real field names.

A connector joins the conformance suite (``tests/test_connectors_conformance.py``) by adding its fake
class to ``FAKES`` below: one line per connector kind. A fake implements the ``FakeApi`` protocol of
``tests/fakes/base.py``.
"""

from __future__ import annotations

from tests.fakes.base import FakeApi
from tests.fakes.billing import ChargebeeFake, RecurlyFake, StripeFake
from tests.fakes.braintree import BraintreeFake
from tests.fakes.gocardless import GoCardlessFake
from tests.fakes.hubspot import HubSpotFake
from tests.fakes.intercom import IntercomFake

FAKES: dict[str, type[FakeApi]] = {
    "stripe": StripeFake,
    "chargebee": ChargebeeFake,
    "recurly": RecurlyFake,
    "braintree": BraintreeFake,
    "gocardless": GoCardlessFake,
    "hubspot": HubSpotFake,
    "intercom": IntercomFake,
}
