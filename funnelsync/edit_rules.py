"""The edit rules (docs/importing.md, "Manual entry and edits"), one definition for every door that edits a customer.

A manual entry, an edit, a bulk edit and the HTTP API's writes all keep them:

- a lead status cannot be set on a subscriber (status Active, Past_Due or Cancelled);
- a lead or trial date may not lie in the future, beyond ``CLOCK_SKEW``: a date sent as "now" by a
  machine whose clock runs a little ahead is not in the future;
- the resulting trial date may not precede the resulting lead date.

A rule judges only what an edit changes: it applies when the edit touches the fields it is about (a
lead status; a lead or trial date), so customers whose stored values already break it can still be
given an owner, a tag or a custom attribute.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from funnelsync.records import SUBSCRIBER_STATUSES

CLOCK_SKEW = timedelta(minutes=5)
DATE_FIELDS = ("lead_created_at", "free_trial_started_at")


def lies_in_future(value: datetime, now: datetime) -> bool:
    """Whether a lead or trial date is later than ``now`` allows (``CLOCK_SKEW`` of tolerance)."""
    return value > now + CLOCK_SKEW


def trial_precedes_lead(lead: datetime | None, trial: datetime | None) -> str | None:
    """Why a trial date may not go with a lead date, or None when they may."""
    if lead is not None and trial is not None and trial < lead:
        return f"the trial date {trial.isoformat()} would precede the lead date {lead.isoformat()}"
    return None


def skip_reason(
    status: str,
    lead_created_at: datetime | None,
    free_trial_started_at: datetime | None,
    edits: Mapping[str, Any],
    now: datetime,
) -> str | None:
    """Why these edits may not be applied to a customer in this state, or None when they may.

    A bulk edit skips the customer with this reason; a single edit refuses with it. Only the rules
    about fields ``edits`` touches are checked.
    """
    if edits.get("lead_status") is not None and status in SUBSCRIBER_STATUSES:
        return f"a lead status cannot be set on a subscriber (status {status})"
    for name in DATE_FIELDS:
        value = edits.get(name)
        if value is not None and lies_in_future(value, now):
            return f"{name} {value.isoformat()} lies in the future"
    if not any(name in edits for name in DATE_FIELDS):
        # Dates already in disagreement (as imported) are not this edit's doing: an owner-only edit
        # neither makes them worse nor is refused for them.
        return None
    # A key present with None clears the date: .get's default applies only to an absent key.
    lead = edits.get(DATE_FIELDS[0], lead_created_at)
    trial = edits.get(DATE_FIELDS[1], free_trial_started_at)
    return trial_precedes_lead(lead, trial)
