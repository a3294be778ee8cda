"""The edit rules have one clock-skew tolerance, for edits by hand and writes through the API alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from funnelsync.edit_rules import CLOCK_SKEW, lies_in_future, skip_reason, trial_precedes_lead

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ahead", "future"),
    [(timedelta(0), False), (timedelta(minutes=1), False), (CLOCK_SKEW, False),
     (CLOCK_SKEW + timedelta(seconds=1), True), (timedelta(days=1), True)],
)
def test_a_date_a_little_ahead_of_the_clock_is_not_in_the_future(ahead: timedelta, future: bool) -> None:
    assert lies_in_future(NOW + ahead, NOW) is future
    reason = skip_reason("New_Lead", None, None, {"free_trial_started_at": NOW + ahead}, NOW)
    assert (reason is not None and "lies in the future" in reason) is future


def test_trial_before_lead_names_both_dates() -> None:
    lead, trial = datetime(2025, 3, 1, tzinfo=UTC), datetime(2025, 2, 1, tzinfo=UTC)
    assert trial_precedes_lead(lead, trial) == (
        "the trial date 2025-02-01T00:00:00+00:00 would precede the lead date 2025-03-01T00:00:00+00:00"
    )
    assert trial_precedes_lead(trial, lead) is None and trial_precedes_lead(None, trial) is None
