"""Status derivation (SPEC section 2), table-driven."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


def _rules_as_written(states: list[tuple[str, bool]], lead_status: str | None) -> str:
    """SPEC's rules, one sentence per line, as the oracle for the one-pass implementation."""
    if any(state == "past_due" for state, _ in states):
        return "Past_Due"
    if any(state == "active" and paid for state, paid in states):
        return "Active"
    if states and any(paid for _, paid in states) and all(state == "cancelled" for state, _ in states):
        return "Cancelled"
    return (
        lead_status if lead_status in ("New_Lead", "Working_Lead", "Qualified_Lead", "Unqualified_Lead") else "New_Lead"
    )


@given(
    st.lists(st.tuples(st.sampled_from(["trialing", "active", "past_due", "cancelled"]), st.booleans()), max_size=5),
    st.sampled_from([None, "New_Lead", "Working_Lead", "Qualified_Lead", "Unqualified_Lead", "bogus"]),
)
def test_status_matches_the_rules_for_any_set_of_subscriptions(states, lead_status) -> None:
    assert derive_status(iter(states), lead_status) == _rules_as_written(states, lead_status)
