"""A subscription that began with a free trial, as the estimated sales report really carries it.

Checked against Google's subscription order numbers (Play Console help and the billing docs: "GPA.1234-
5678-9012-34567 (base order number)", "GPA.1234-5678-9012-34567..0 (first recurrence orderID)") and the
estimated sales report's definition (charged and refunded transactions: a free trial charges nothing,
so its sign-up has no row); the example is ../shared/reference/payloads/google_play/salesreport_202608.csv,
whose only order, ``GPA.3345-1234-5678-90123..0``, is the first charge of offer ``freetrial-7d``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine, select

from connectors.files.google_play_report import read_sales_report, sales_orders
from jobs.google_play_sales import import_sales_report
from storage.schema import customers, source_customers, subscriptions
from storage.sources import create_source

EXAMPLE = Path(__file__).parent / "fixtures/payloads/google_play/salesreport_202608.csv"
FIRST_CHARGE = datetime.fromtimestamp(1786147205, tz=UTC)
HEADER = EXAMPLE.read_text().splitlines()[0]


def test_first_recurrence_of_a_free_trial_offer_gives_the_trial_start_and_lead_date() -> None:
    orders = sales_orders(read_sales_report(EXAMPLE).rows)
    facts = orders["GPA.3345-1234-5678-90123"]
    assert facts.first_paid_at == FIRST_CHARGE
    assert facts.trial_started_at == FIRST_CHARGE - timedelta(days=7)
    assert facts.lead_created_at == FIRST_CHARGE - timedelta(days=7)


def report(*rows: str) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def row(order: str, stamp: int, amount: str, offer: str) -> str:
    day = datetime.fromtimestamp(stamp, tz=UTC).date().isoformat()
    return (f"{order},{day},{stamp},Charged,a54x,Acme Pro (Acme Notes),com.acme.notes,subscription,acme_pro,USD,"
            f"{amount},0.00,{amount},,CA,94105,US,monthly,{offer}")


def test_no_trial_is_invented_for_a_paid_sign_up_or_an_offer_that_is_no_trial() -> None:
    paid_signup = report(row("GPA.1111-0000-0000-00001", 1785000000, "9.99", ""),
                         row("GPA.1111-0000-0000-00001..0", 1786000000, "9.99", "freetrial-7d"),
                         row("GPA.2222-0000-0000-00002..0", 1786000000, "4.99", "intro-50off-1m"),
                         row("GPA.3333-0000-0000-00003..0", 1786000000, "9.99", "free-trial-1m"))
    orders = sales_orders(read_sales_report(paid_signup, "salesreport_202608.csv").rows)
    assert orders["GPA.1111-0000-0000-00001"].trial_started_at is None  # its sign-up was charged
    assert orders["GPA.2222-0000-0000-00002"].trial_started_at is None  # an intro price, not a trial
    month_trial = orders["GPA.3333-0000-0000-00003"]
    first = datetime.fromtimestamp(1786000000, tz=UTC)
    assert month_trial.trial_started_at == first.replace(month=first.month - 1)


def test_import_stores_the_trial_start_as_lead_date(db_engine: Engine) -> None:
    with db_engine.begin() as conn:
        create_source(conn, "play", "google_play", {})
    import_sales_report(db_engine, "play", EXAMPLE)
    with db_engine.connect() as conn:
        cust = conn.execute(select(customers.c.lead_created_at, customers.c.free_trial_started_at,
                                   customers.c.subscriber_since)).one()
        sub = conn.execute(select(subscriptions.c.trial_started_at, subscriptions.c.first_paid_at)
                           .join(source_customers)).one()
    trial = FIRST_CHARGE - timedelta(days=7)
    assert (cust.lead_created_at, cust.free_trial_started_at, cust.subscriber_since) == (trial, trial, FIRST_CHARGE)
    assert (sub.trial_started_at, sub.first_paid_at) == (trial, FIRST_CHARGE)
