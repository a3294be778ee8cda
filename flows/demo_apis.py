"""Local stand-ins of the Stripe and Chargebee APIs, served over real HTTP on 127.0.0.1.

The demo, the distributed smoke test and the flow tests point real connectors at these servers: the
connectors page, authenticate and retry exactly as against the vendors. Payloads use the vendors' field
names (Stripe ``2024-06-20``, Chargebee API v2) and their paging (Stripe ``starting_after`` while
``has_more``; Chargebee ``offset`` = ``next_offset``). The population is generated from a seed, with
dates relative to now so the current month's funnel has figures.

Example:
    >>> with FakeVendorServer(people=population(30, seed=1)) as server:
    ...     settings = server.stripe_settings()   # {"api_key": ..., "base_url": "http://127.0.0.1:PORT"}
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

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


@dataclass
class DemoSubscription:
    """A subscription as both vendors describe it (epoch seconds)."""

    id: str
    status: str  # trialing | active | canceled
    created: int
    trial_start: int | None = None
    trial_end: int | None = None
    canceled_at: int | None = None
    first_paid_at: int | None = None
    amount: int = 4900


@dataclass
class DemoPerson:
    """One vendor customer."""

    id: str
    email: str
    first_name: str
    last_name: str
    company: str
    country: str
    created: int
    subscriptions: list[DemoSubscription] = field(default_factory=list)


def population(n: int, seed: int, prefix: str = "cus_", now: float | None = None, days: int = 75) -> list[DemoPerson]:
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
        person = DemoPerson(
            id=f"{prefix}{seed:02d}{i:04d}",
            email=f"{first.lower()}.{last.lower().replace(' ', '')}{seed}{i}@{rng.choice(COMPANIES).lower()}.example",
            first_name=first,
            last_name=last,
            company=f"{rng.choice(COMPANIES)} {rng.choice(('Inc', 'Ltd', 'GmbH', 'BV'))}",
            country=rng.choice(COUNTRIES),
            created=created,
        )
        sub_id = f"sub_{person.id}"
        trial_days = 14
        shape = i % 4
        if shape == 0:
            person.subscriptions.append(DemoSubscription(sub_id, "trialing", created, created, created + trial_days * DAY))
        elif shape == 1:
            paid = min(created + trial_days * DAY, now_s - 60)
            person.subscriptions.append(
                DemoSubscription(sub_id, "active", created, created, created + trial_days * DAY, first_paid_at=paid)
            )
        elif shape == 2:
            person.subscriptions.append(DemoSubscription(sub_id, "active", created, first_paid_at=created + 30))
        else:
            end = created + trial_days * DAY
            person.subscriptions.append(DemoSubscription(sub_id, "canceled", created, created, end, canceled_at=end))
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
        stripe_people: list[DemoPerson] | None = None,
        chargebee_people: list[DemoPerson] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.stripe_people = list(stripe_people or [])
        self.chargebee_people = list(chargebee_people or [])
        self.requests: list[tuple[str, str]] = []
        # Seconds each answer waits, to stand in for a vendor's latency (tests use it to keep a sync busy).
        self.delay_seconds = 0.0
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}"

    def start(self) -> Self:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-vendor-apis", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()

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
        with self._lock:
            self._failures.setdefault(path, []).extend(statuses)

    # ------------------------------------------------------------------ HTTP plumbing

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query, keep_blank_values=True)
                status, body, headers = outer.dispatch(parts.path, query, dict(self.headers.items()))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the demo prints its own lines
                pass

        return Handler

    def dispatch(self, path: str, query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """Route one GET; returns (status, JSON body, extra headers)."""
        if self.delay_seconds:
            time.sleep(self.delay_seconds)
        with self._lock:
            self.requests.append(("GET", path))
            pending = self._failures.get(path)
            if pending:
                status = pending.pop(0)
                return status, {"error": {"message": "Service temporarily unavailable", "type": "api_error"}}, {
                    "Retry-After": "0"
                }
        q = {k: v[-1] for k, v in query.items()}
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if path.startswith("/v1/"):
            if auth != f"Bearer {STRIPE_KEY}":
                return 401, {"error": {"message": "Invalid API Key provided: sk_****", "type": "invalid_request_error"}}, {}
            return self._stripe(path, q)
        if path.startswith("/api/v2/"):
            user = ""
            if auth.startswith("Basic "):
                user = base64.b64decode(auth[6:]).decode().partition(":")[0]
            if user != CHARGEBEE_KEY:
                return 401, {"message": "Sorry, authentication failed. Invalid api key", "api_error_code": "api_authentication_failed", "type": "invalid_request", "http_status_code": 401}, {}
            return self._chargebee(path, q)
        return 404, {"error": {"message": f"Unrecognized request URL (GET: {path})"}}, {}

    # ------------------------------------------------------------------ Stripe

    @staticmethod
    def _stripe_customer(p: DemoPerson) -> dict[str, Any]:
        return {
            "id": p.id, "object": "customer", "created": p.created, "email": p.email,
            "name": f"{p.first_name} {p.last_name}", "description": None, "livemode": False,
            "address": {"country": p.country, "city": None, "state": None, "postal_code": None, "line1": None},
            "metadata": {"company": p.company}, "currency": "usd", "delinquent": False,
        }

    @staticmethod
    def _stripe_subscription(p: DemoPerson, s: DemoSubscription) -> dict[str, Any]:
        return {
            "id": s.id, "object": "subscription", "customer": p.id, "status": s.status, "created": s.created,
            "start_date": s.created, "trial_start": s.trial_start, "trial_end": s.trial_end,
            "canceled_at": s.canceled_at, "ended_at": s.canceled_at, "currency": "usd",
            "items": {"object": "list", "data": [{"price": {"unit_amount": s.amount, "recurring": {"interval": "month"}}}]},
        }

    @staticmethod
    def _stripe_invoices(p: DemoPerson, s: DemoSubscription) -> list[dict[str, Any]]:
        invoices = []
        if s.trial_start is not None:  # a trial opens with a $0 invoice: not a conversion
            invoices.append({"id": f"in_{s.id}_0", "object": "invoice", "customer": p.id, "subscription": s.id,
                             "amount_paid": 0, "status": "paid", "billing_reason": "subscription_create",
                             "status_transitions": {"paid_at": s.trial_start}})
        if s.first_paid_at is not None:
            invoices.append({"id": f"in_{s.id}_1", "object": "invoice", "customer": p.id, "subscription": s.id,
                             "amount_paid": s.amount, "status": "paid", "billing_reason": "subscription_cycle",
                             "status_transitions": {"paid_at": s.first_paid_at}})
        return invoices

    @staticmethod
    def _stripe_page(items: list[dict[str, Any]], q: dict[str, str], url: str) -> tuple[int, Any, dict[str, str]]:
        limit = max(1, min(100, int(q.get("limit") or 10)))
        start = 0
        if q.get("starting_after"):
            ids = [item["id"] for item in items]
            if q["starting_after"] not in ids:
                return 400, {"error": {"message": f"No such object: '{q['starting_after']}'"}}, {}
            start = ids.index(q["starting_after"]) + 1
        window = items[start : start + limit]
        return 200, {"object": "list", "url": url, "has_more": start + limit < len(items), "data": window}, {}

    def _stripe(self, path: str, q: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        people = sorted(self.stripe_people, key=lambda p: (p.created, p.id), reverse=True)  # newest first
        by_id = {p.id: p for p in people}
        if path == "/v1/customers":
            since = int(q.get("created[gte]") or 0)
            return self._stripe_page([self._stripe_customer(p) for p in people if p.created >= since], q, path)
        if path.startswith("/v1/customers/"):
            person = by_id.get(path.rsplit("/", 1)[1])
            if person is None:
                return 404, {"error": {"message": "No such customer", "type": "invalid_request_error"}}, {}
            return 200, self._stripe_customer(person), {}
        if path == "/v1/subscriptions":
            owners = [by_id[q["customer"]]] if q.get("customer") in by_id else ([] if q.get("customer") else people)
            subs = [self._stripe_subscription(p, s) for p in owners for s in p.subscriptions]
            if q.get("status", "all") != "all":
                subs = [s for s in subs if s["status"] == q["status"]]
            return self._stripe_page(subs, q, path)
        if path == "/v1/invoices":
            owners = [by_id[q["customer"]]] if q.get("customer") in by_id else ([] if q.get("customer") else people)
            invoices = [inv for p in owners for s in p.subscriptions for inv in self._stripe_invoices(p, s)]
            return self._stripe_page(invoices, q, path)
        if path == "/v1/events":
            return 200, {"object": "list", "url": path, "has_more": False, "data": []}, {}
        return 404, {"error": {"message": f"Unrecognized request URL (GET: {path})"}}, {}

    # ------------------------------------------------------------------ Chargebee

    @staticmethod
    def _cb_customer(p: DemoPerson) -> dict[str, Any]:
        return {
            "id": p.id, "object": "customer", "first_name": p.first_name, "last_name": p.last_name,
            "email": p.email, "company": p.company, "created_at": p.created, "updated_at": p.created,
            "deleted": False, "resource_version": p.created * 1000,
            "billing_address": {"country": p.country, "object": "billing_address"},
        }

    @staticmethod
    def _cb_subscription(p: DemoPerson, s: DemoSubscription) -> dict[str, Any]:
        status = {"trialing": "in_trial", "active": "active", "canceled": "cancelled"}[s.status]
        return {
            "id": s.id, "object": "subscription", "customer_id": p.id, "status": status, "created_at": s.created,
            "started_at": s.created, "trial_start": s.trial_start, "trial_end": s.trial_end,
            "cancelled_at": s.canceled_at, "updated_at": s.created, "due_invoices_count": 0,
            "activated_at": s.first_paid_at,
        }

    @staticmethod
    def _cb_page(items: list[dict[str, Any]], q: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        limit = max(1, min(100, int(q.get("limit") or 10)))
        start = int(json.loads(q["offset"])[0]) if q.get("offset") else 0
        body: dict[str, Any] = {"list": items[start : start + limit]}
        if start + limit < len(items):
            body["next_offset"] = json.dumps([str(start + limit), "0"])
        return 200, body, {}

    def _chargebee(self, path: str, q: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        people = sorted(self.chargebee_people, key=lambda p: (p.created, p.id))
        wanted = set(json.loads(q["customer_id[in]"])) if q.get("customer_id[in]") else None
        after = int(q["updated_at[after]"]) if q.get("updated_at[after]") else None
        if path == "/api/v2/customers":
            ids = set(json.loads(q["id[in]"])) if q.get("id[in]") else None
            rows = [{"customer": self._cb_customer(p)} for p in people
                    if (ids is None or p.id in ids) and (after is None or p.created > after)]
            return self._cb_page(rows, q)
        if path == "/api/v2/subscriptions":
            rows = [
                {"subscription": self._cb_subscription(p, s), "customer": self._cb_customer(p)}
                for p in people for s in p.subscriptions
                if (wanted is None or p.id in wanted) and (after is None or s.created > after)
            ]
            return self._cb_page(rows, q)
        if path == "/api/v2/invoices":
            rows = [
                {"invoice": {"id": f"inv_{s.id}", "object": "invoice", "customer_id": p.id, "subscription_id": s.id,
                             "status": "paid", "recurring": True, "amount_paid": s.amount, "paid_at": s.first_paid_at,
                             "date": s.first_paid_at}}
                for p in people for s in p.subscriptions
                if s.first_paid_at is not None and (wanted is None or p.id in wanted)
            ]
            return self._cb_page(rows, q)
        return 404, {"message": f"Sorry, we couldn't find that resource: {path}", "api_error_code": "resource_not_found"}, {}


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
    server = FakeVendorServer(population(args.stripe, seed=1), population(args.chargebee, seed=2, prefix="cb_"), port=args.port)
    server.delay_seconds = args.delay
    line = json.dumps({"url": server.url, "stripe": server.stripe_settings(), "chargebee": server.chargebee_settings()})
    if args.ready_file:
        with open(args.ready_file, "w", encoding="utf-8") as handle:
            handle.write(line + "\n")
    print(line, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server._server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server._server.server_close()


if __name__ == "__main__":
    main()
