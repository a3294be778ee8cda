"""Customer status from subscription facts and the lead status (README, "How customers are stored")."""

from __future__ import annotations

from collections.abc import Iterable

from funnelsync.records import LEAD_STATUSES

DEFAULT_LEAD_STATUS = "New_Lead"


def derive_status(
    subscription_states: Iterable[tuple[str, bool]],
    lead_status: str | None,
) -> str:
    """Return the customer status.

    Args:
        subscription_states: for each subscription, ``(state, has_paid)`` where ``state`` is one of
            trialing, active, past_due, cancelled and ``has_paid`` tells whether it was ever paid for
            (a first paid, non-zero charge).
        lead_status: the lead status set by hand, or None.

    The rules, in order: any subscription past due → Past_Due; else any active paid subscription →
    Active; else it has paid before and every subscription is cancelled → Cancelled; else the lead
    status (New_Lead by default). A trialing customer is a lead.
    """
    # One pass, no generators: a first import derives this for every record that reports subscriptions.
    active_paid = paid_any = False
    all_cancelled = seen = False
    for state, paid in subscription_states:
        if state == "past_due":
            return "Past_Due"
        if not seen:
            seen = all_cancelled = True
        if paid:
            paid_any = True
            if state == "active":
                active_paid = True
        if state != "cancelled":
            all_cancelled = False
    if active_paid:
        return "Active"
    if paid_any and all_cancelled:
        return "Cancelled"
    if lead_status in LEAD_STATUSES:
        return lead_status
    return DEFAULT_LEAD_STATUS


def is_subscriber_status(status: str) -> bool:
    """True for the statuses derived from subscriptions, which a user cannot set by hand."""
    return status not in LEAD_STATUSES
