"""Status derivation (SPEC section 2), table-driven."""

import pytest

from funnelsync.status import derive_status

CASES = [
    # (subscriptions as (state, has_paid), lead status, expected)
    ([], None, "New_Lead"),
    ([], "Qualified_Lead", "Qualified_Lead"),
    ([], "bogus", "New_Lead"),
    ([("trialing", False)], "Working_Lead", "Working_Lead"),
    ([("active", True)], "Working_Lead", "Active"),
    ([("active", False)], None, "New_Lead"),  # active but never paid (a $0 plan) is still a lead
    ([("active", True), ("past_due", True)], None, "Past_Due"),
    ([("past_due", False)], None, "Past_Due"),
    ([("cancelled", True)], "Qualified_Lead", "Cancelled"),
    ([("cancelled", True), ("cancelled", False)], None, "Cancelled"),
    ([("cancelled", False)], None, "New_Lead"),  # cancelled trial that never paid: a lead
    ([("cancelled", True), ("trialing", False)], "Unqualified_Lead", "Unqualified_Lead"),
    ([("cancelled", True), ("active", True)], None, "Active"),
]


@pytest.mark.parametrize(("subs", "lead_status", "expected"), CASES)
def test_derive_status(subs, lead_status, expected):
    assert derive_status(subs, lead_status) == expected
