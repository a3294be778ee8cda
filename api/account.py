"""``GET /v1/account``: the account settings the commercial product's clients read on start-up."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from api.auth import require_api_key
from api.errors import no_nul_in_url
from funnelsync.timeutil import account_timezone

router = APIRouter(prefix="/v1", tags=["account"], dependencies=[Depends(require_api_key), Depends(no_nul_in_url)])


@router.get("/account")
def account() -> dict[str, str]:
    """The account: its time zone (``FUNNELSYNC_TIMEZONE``, where periods are cut) and week start."""
    return {
        "id": "acc_funnelsync",
        "name": "funnelsync",
        # funnelsync tracks no revenue; the currency only fills the shape clients expect.
        "currency": "USD",
        "time_zone": account_timezone().key,
        # Weeks are ISO weeks (docs/metrics.md, "Periods").
        "week_start_on": "monday",
    }
