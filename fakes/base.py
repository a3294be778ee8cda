"""What every fake vendor API offers the conformance suite, a shared customer population, and how to find a fake."""

from __future__ import annotations

import base64
import importlib
import pkgutil
from collections import defaultdict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:  # respx is a test tool: the demo serves the fakes without it
    import respx

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
DAY = 86_400


@dataclass
class FakeSubscription:
    id: str
    status: str  # trialing | active | canceled | past_due
    created: int
    trial_start: int | None = None
    trial_end: int | None = None
    canceled_at: int | None = None
    amount: int = 2900
    updated: int = 0


@dataclass
class FakeInvoice:
    id: str
    subscription: str
    amount_paid: int
    paid_at: int
    billing_reason: str = "subscription_cycle"


@dataclass
class FakePerson:
    id: str
    email: str
    first_name: str
    last_name: str
    company: str
    country: str
    created: int
    updated: int
    subscriptions: list[FakeSubscription] = field(default_factory=list)
    invoices: list[FakeInvoice] = field(default_factory=list)


def make_people(n: int, prefix: str) -> list[FakePerson]:
    """``n`` customers in five shapes: lead, trialing, converted trial, direct payer, abandoned trial."""
    people = []
    for i in range(n):
        created = T0 + i * 3600
        person = FakePerson(
            id=f"{prefix}{i:05d}",
            email=f"user{i}@example{i % 7}.com",
            first_name=f"First{i}",
            last_name=f"Last{i}",
            company=f"Company {i}",
            country=["US", "DE", "FR", "GB", "JP"][i % 5],
            created=created,
            updated=created + 60,
        )
        shape = i % 5
        sid = f"sub_{prefix}{i:05d}"
        if shape == 1:  # trialing (trial ends far in the future relative to T0: still running)
            person.subscriptions.append(FakeSubscription(sid, "trialing", created, created, created + 400 * DAY))
            person.invoices.append(FakeInvoice(f"in_{sid}_0", sid, 0, created, "subscription_create"))
        elif shape == 2:  # trial converted: a $0 opening invoice, then paid ones
            trial_end = created + 14 * DAY
            person.subscriptions.append(FakeSubscription(sid, "active", created, created, trial_end))
            person.invoices.append(FakeInvoice(f"in_{sid}_0", sid, 0, created, "subscription_create"))
            person.invoices.append(FakeInvoice(f"in_{sid}_1", sid, 2900, trial_end + 30))
            person.invoices.append(FakeInvoice(f"in_{sid}_2", sid, 2900, trial_end + 30 * DAY))
        elif shape == 3:  # paid from the start, no trial
            person.subscriptions.append(FakeSubscription(sid, "active", created, amount=4900))
            person.invoices.append(FakeInvoice(f"in_{sid}_1", sid, 4900, created + 5, "subscription_create"))
        elif shape == 4:  # trial abandoned: cancelled at trial end, never paid
            trial_end = created + 7 * DAY
            person.subscriptions.append(
                FakeSubscription(sid, "canceled", created, created, trial_end, canceled_at=trial_end)
            )
            person.invoices.append(FakeInvoice(f"in_{sid}_0", sid, 0, created, "subscription_create"))
        for sub in person.subscriptions:
            sub.updated = person.updated
        people.append(person)
    return people


def basic_user(request: httpx.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return None
    user, _, _ = base64.b64decode(header[6:]).decode().partition(":")
    return user


def window(items: list[Any], start: int, limit: int) -> tuple[list[Any], bool]:
    """``items[start:start+limit]`` and whether more follow."""
    return items[start : start + limit], start + limit < len(items)


# What ``FakeApi.inject`` takes for one request.
Injected = httpx.Response | BaseException | Callable[[httpx.Response], httpx.Response] | None


class FakeApi:
    """A fake vendor API installed on a respx router.

    Class attributes a fake declares: ``kind``, ``base_url``, ``main_path`` (the list of the first
    stream, where the suite injects failures), ``main_stream`` and ``settings`` extras.

    Hooks the suite uses: ``inject(path, responses)`` serves canned responses (or transport failures, or
    spoilt real answers) before the real ones;
    ``loop_path`` makes that list ignore its page token (so the same token comes back); ``calls``
    counts requests per path; ``expected_ids()`` lists every external id a full sync must produce.
    """

    kind: str = ""
    base_url: str = ""
    main_path: str = ""
    main_stream: str = ""
    api_key = "sk_test_fake_SECRET_4242"
    # What the error of a refused key says (a fake whose vendor refuses keys otherwise names its answer).
    refused = "401"

    def __init__(self, n: int = 25, page_size: int = 10) -> None:
        self.people = make_people(n, self.id_prefix())
        self.page_size = page_size
        self.injections: dict[str, list[Injected]] = defaultdict(list)
        self.loop_path: str | None = None
        self.calls: dict[str, int] = defaultdict(int)
        self.events: list[dict[str, Any]] = []

    def id_prefix(self) -> str:
        return "cus_"

    def settings(self, api_key: str | None = None) -> dict[str, Any]:
        """The source settings pointing the connector at this fake."""
        return {"api_key": api_key or self.api_key, "base_url": self.base_url, "page_size": self.page_size}

    def expected_ids(self) -> set[str]:
        return {p.id for p in self.people}

    def authorised(self, request: httpx.Request) -> bool:
        return basic_user(request) == self.api_key

    def inject(self, path: str, responses: list[Injected]) -> None:
        """Answer the next requests of ``path`` with ``responses``, in order, one each: a response; None
        for the real answer (to reach a later page); an exception, raised as the transport's; or a function
        of the real answer returning the one to send."""
        self.injections[path].extend(responses)

    def routes(self) -> list[tuple[str, str, Callable[[httpx.Request], httpx.Response]]]:
        """``(method, path regex relative to base_url, handler)``."""
        raise NotImplementedError

    def install(self, router: respx.Router) -> None:
        for method, pattern, handler in self.routes():
            router.route(method=method, url__regex=rf"^{self.base_url}{pattern}(\?.*)?$").mock(
                side_effect=self._wrap(handler)
            )

    def close(self) -> None:
        """Release what ``install`` started (a fake served on a port of its own stops there)."""

    def served(self) -> AbstractContextManager[str]:
        """This fake over real HTTP on 127.0.0.1 for a sync in another thread or process (``fakes.server``)."""
        from fakes.server import serve

        return serve(self)

    def _wrap(self, handler: Callable[[httpx.Request], httpx.Response]) -> Callable[[httpx.Request], httpx.Response]:
        def serve(request: httpx.Request) -> httpx.Response:
            path = request.url.path
            self.calls[path] += 1
            if not self.authorised(request):
                return self.unauthorised()
            if self.injections.get(path):
                canned = self.injections[path].pop(0)
                if isinstance(canned, BaseException):
                    raise canned  # a transport failure: reset connection, timeout
                if callable(canned):
                    return canned(handler(request))  # the real answer, spoilt (a key dropped, JSON cut)
                if canned is not None:
                    return canned
            return handler(request)

        return serve

    def unauthorised(self) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": "Invalid credentials"}})

    def start_index(self, token: str | None) -> int:
        """Where a page token points (fakes encode an index); ignored in loop mode."""
        return int(token) if token else 0


def fake_of(kind: str) -> type[FakeApi] | None:
    """The fake API standing in for ``kind``: the ``FakeApi`` declaring that kind in ``fakes/<kind>.py``."""
    try:
        module = importlib.import_module(f"fakes.{kind}")
    except ModuleNotFoundError as exc:
        if exc.name == f"fakes.{kind}":
            return None
        raise
    return next((v for v in vars(module).values()
                 if isinstance(v, type) and issubclass(v, FakeApi) and v.kind == kind), None)


def shipped_fakes() -> dict[str, type[FakeApi]]:
    """Every fake API of ``fakes/``, by the kind it declares (a module may hold helpers and no fake)."""
    found: dict[str, type[FakeApi]] = {}
    for module_info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        module = importlib.import_module(f"fakes.{module_info.name}")
        for value in vars(module).values():
            declared_here = isinstance(value, type) and value.__module__ == module.__name__
            if declared_here and issubclass(value, FakeApi) and value.kind:
                found[value.kind] = value
    return found
