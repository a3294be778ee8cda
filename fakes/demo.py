"""The demo's Stripe and Chargebee: the fakes of ``fakes.stripe`` and ``fakes.chargebee`` served on one port.

The demo, the distributed smoke test and the flow tests point real connectors at this server: the
connectors page, authenticate and retry exactly as against the vendors, through the same fakes the
conformance suite runs against. What is the demo's own is its population, generated from a seed with
dates relative to now, so the current month's funnel has figures.

Example:
    >>> with FakeVendorServer(stripe_people=population(30, seed=1)) as server:
    ...     settings = server.stripe_settings()   # {"api_key": ..., "base_url": "http://127.0.0.1:PORT"}
"""

from __future__ import annotations

import json
import random
import time
from typing import Any, Self

import httpx

from fakes.base import FakeInvoice, FakePerson, FakeSubscription
from fakes.chargebee import ChargebeeFake
from fakes.server import FakeServer
from fakes.stripe import StripeFake

DAY = 86_400
STRIPE_KEY = "sk_test_demo_4eC39HqLyjWDarjtT1zdp7dc"
CHARGEBEE_KEY = "test_demo_cbkey_7a1c"
CHARGEBEE_SITE = "demo-acme"

FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia", "Linus",
               "Margaret", "Dennis", "Sophie", "Tim", "Hedy", "John", "Katherine", "Guido", "Anita", "Bjarne")
LAST_NAMES = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson", "Perlman",
              "Torvalds", "Hamilton", "Ritchie", "Wilson", "Berners-Lee", "Lamarr", "Backus", "Johnson",
              "van Rossum", "Borg", "Stroustrup")
COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne", "Tyrell", "Soylent")
COUNTRIES = ("US", "GB", "DE", "FR", "NL", "CA", "AU", "ES")


def customer(
    customer_id: str, email: str, first_name: str, last_name: str, company: str, country: str, created: int
) -> FakePerson:
    """One vendor customer, unchanged since it was created."""
    return FakePerson(customer_id, email, first_name, last_name, company, country, created, updated=created)


def subscribe(
    person: FakePerson,
    subscription_id: str,
    status: str,
    created: int,
    trial_start: int | None = None,
    trial_end: int | None = None,
    canceled_at: int | None = None,
    first_paid_at: int | None = None,
    amount: int = 4900,
) -> None:
    """Give ``person`` a subscription (epoch seconds) and the invoices both vendors show for it.

    A trial opens with a $0 invoice, which is no conversion; the first payment is an invoice of ``amount``.
    """
    person.subscriptions.append(
        FakeSubscription(subscription_id, status, created, trial_start, trial_end, canceled_at, amount, updated=created)
    )
    if trial_start is not None:
        person.invoices.append(FakeInvoice(f"in_{subscription_id}_0", subscription_id, 0, trial_start,
                                           "subscription_create"))
    if first_paid_at is not None:
        person.invoices.append(FakeInvoice(f"in_{subscription_id}_1", subscription_id, amount, first_paid_at))


def population(n: int, seed: int, prefix: str = "cus_", now: float | None = None, days: int = 75) -> list[FakePerson]:
    """``n`` customers created over the last ``days`` days, in four shapes.

    Shapes (by index modulo 4): still on trial, trial converted to paid, direct payer without a
    trial, trial abandoned (cancelled at trial end, never paid).
    """
    rng = random.Random(seed)
    now_s = int(now if now is not None else time.time())
    people = []
    for i in range(n):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        created = now_s - rng.randint(2, days) * DAY + rng.randint(0, DAY - 1)
        person = customer(
            f"{prefix}{seed:02d}{i:04d}",
            f"{first.lower()}.{last.lower().replace(' ', '')}{seed}{i}@{rng.choice(COMPANIES).lower()}.example",
            first,
            last,
            f"{rng.choice(COMPANIES)} {rng.choice(('Inc', 'Ltd', 'GmbH', 'BV'))}",
            rng.choice(COUNTRIES),
            created,
        )
        sub_id = f"sub_{person.id}"
        trial_days = 14
        shape = i % 4
        if shape == 0:
            subscribe(person, sub_id, "trialing", created, created, created + trial_days * DAY)
        elif shape == 1:
            paid = min(created + trial_days * DAY, now_s - 60)
            subscribe(person, sub_id, "active", created, created, created + trial_days * DAY, first_paid_at=paid)
        elif shape == 2:
            subscribe(person, sub_id, "active", created, first_paid_at=created + 30)
        else:
            end = created + trial_days * DAY
            subscribe(person, sub_id, "canceled", created, created, end, canceled_at=end)
        people.append(person)
    return people


class FakeVendorServer:
    """Stripe under ``/v1/…`` and Chargebee under ``/api/v2/…`` on one local port.

    Args:
        stripe_people: the Stripe customers.
        chargebee_people: the Chargebee customers.
        host: the address to bind (loopback only).
        port: 0 picks a free port.
    """

    def __init__(
        self,
        stripe_people: list[FakePerson] | None = None,
        chargebee_people: list[FakePerson] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.stripe = StripeFake(n=0)
        self.stripe.people = list(stripe_people or [])
        self.stripe.api_key = STRIPE_KEY
        self.chargebee = ChargebeeFake(n=0)
        self.chargebee.people = list(chargebee_people or [])
        self.chargebee.api_key = CHARGEBEE_KEY
        self.server = FakeServer(self.stripe, self.chargebee, host=host, port=port)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return self.server.url

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path)`` of every request served."""
        return self.server.requests

    @property
    def delay_seconds(self) -> float:
        """Seconds each answer waits, to stand in for a vendor's latency (tests use it to keep a sync busy)."""
        return self.server.delay_seconds

    @delay_seconds.setter
    def delay_seconds(self, seconds: float) -> None:
        self.server.delay_seconds = seconds

    def start(self) -> Self:
        """Serve in a daemon thread."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self.server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stripe_settings(self, api_key: str = STRIPE_KEY) -> dict[str, Any]:
        """Source settings pointing the Stripe connector here."""
        return {"api_key": api_key, "base_url": self.url}

    def chargebee_settings(self, api_key: str = CHARGEBEE_KEY) -> dict[str, Any]:
        """Source settings pointing the Chargebee connector here."""
        return {"api_key": api_key, "site": CHARGEBEE_SITE, "base_url": f"{self.url}/api/v2"}

    def fail_next(self, path: str, statuses: list[int]) -> None:
        """Answer the next requests to ``path`` with these statuses (e.g. ``[503] * 5``) before real ones."""
        fake = self.chargebee if path.startswith("/api/v2/") else self.stripe
        fake.inject(path, [
            httpx.Response(status, headers={"Retry-After": "0"},
                           json={"error": {"message": "Service temporarily unavailable", "type": "api_error"}})
            for status in statuses
        ])


def main(argv: list[str] | None = None) -> None:
    """Serve the fake APIs in the foreground (the distributed smoke runs it as its own process).

    Prints ``{"url": ..., "stripe": {settings}, "chargebee": {settings}}`` as one JSON line once
    listening (and writes it to ``--ready-file``), then serves until interrupted or terminated.
    """
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(description="Local Stripe and Chargebee stand-ins on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--stripe", type=int, default=30, help="Stripe customers")
    parser.add_argument("--chargebee", type=int, default=20, help="Chargebee customers")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each answer waits")
    parser.add_argument("--ready-file", help="write the JSON line here too")
    args = parser.parse_args(argv)
    server = FakeVendorServer(
        population(args.stripe, seed=1), population(args.chargebee, seed=2, prefix="cb_"), port=args.port
    )
    server.server.delay_seconds = args.delay
    line = json.dumps({"url": server.url, "stripe": server.stripe_settings(), "chargebee": server.chargebee_settings()})
    if args.ready_file:
        with open(args.ready_file, "w", encoding="utf-8") as handle:
            handle.write(line + "\n")
    print(line, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server.server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
