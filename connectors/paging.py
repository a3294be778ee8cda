"""Paginators: how each API says "there is another page", declared once.

A paginator has three small hooks (after dlt's ``rest_client/paginators.py``):

- ``items(body)``: the records of one decoded page;
- ``next_token(body)``: the token of the next page, or None on the last page;
- ``apply(request, token)``: the request for the page named by ``token``.

``fetch_pages`` drives any of them and yields WHOLE pages (``Page``), never single rows, so a caller
maps and commits a page at a time. It raises ``PaginationLoopError`` when a token comes back that was
already followed in this run: a server bug that would otherwise loop forever (Singer SDK does the same).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from connectors.http import ApiError, HttpClient
from funnelsync.handoff import put_unless_stopped

T = TypeVar("T")


class PaginationLoopError(ApiError):
    """The API handed back a page token already followed: paging would never end."""


@dataclass(frozen=True)
class PageRequest:
    """One request of a paged list: method, URL (relative to the base URL) and its parameters."""

    url: str
    params: dict[str, Any] = field(default_factory=dict)
    method: str = "GET"
    json_body: Any = None


@dataclass
class Page:
    """One decoded page.

    Attributes:
        items: the records of the page, in API order.
        body: the whole decoded body (for envelopes that carry more than the list).
        token: the token that requested this page (None for the first page of a run).
        next_token: the token of the following page, None when this page is the last.
    """

    items: list[Any]
    body: Any
    token: str | None
    next_token: str | None


class Paginator(Protocol):
    """The three hooks of a pagination style."""

    def items(self, body: Any) -> list[Any]:
        """The records of one page."""

    def next_token(self, body: Any) -> str | None:
        """The next page's token, or None when ``body`` is the last page."""

    def apply(self, request: PageRequest, token: str) -> PageRequest:
        """The request for the page named by ``token``."""


def _dig(body: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


@dataclass(frozen=True)
class StripeCursorPaginator:
    """Stripe lists: ``starting_after=<id of the last item>`` while ``has_more``.

    Example page::

        {"object": "list", "has_more": true, "url": "/v1/customers",
         "data": [{"id": "cus_B", ...}, {"id": "cus_A", ...}]}

    gives next token ``"cus_A"`` and the next request ``?starting_after=cus_A``. With
    ``direction="ending_before"`` it walks towards newer objects instead (``ending_before=<first id>``),
    which is how ``/v1/events`` is read oldest-first from a saved event id.
    """

    direction: str = "starting_after"

    def items(self, body: Any) -> list[Any]:
        return list(body.get("data") or [])

    def next_token(self, body: Any) -> str | None:
        data = body.get("data") or []
        if not body.get("has_more") or not data:
            return None
        item = data[0] if self.direction == "ending_before" else data[-1]
        return str(item["id"])

    def apply(self, request: PageRequest, token: str) -> PageRequest:
        return replace(request, params={**request.params, self.direction: token})


@dataclass(frozen=True)
class OffsetTokenPaginator:
    """Chargebee lists: ``offset=<next_offset>`` until ``next_offset`` is absent.

    Example page::

        {"list": [{"customer": {"id": "cb_1", ...}}, {"customer": {"id": "cb_2", ...}}],
         "next_offset": "[\\"1700000000000\\",\\"230000000012\\"]"}

    gives next token ``'["1700000000000","230000000012"]'``, passed back unchanged as ``offset``.
    Items are the list entries as they come (each wraps its object under the resource name).
    """

    list_key: str = "list"
    token_key: str = "next_offset"
    param: str = "offset"

    def items(self, body: Any) -> list[Any]:
        return list(body.get(self.list_key) or [])

    def next_token(self, body: Any) -> str | None:
        token = body.get(self.token_key)
        return str(token) if token not in (None, "") else None

    def apply(self, request: PageRequest, token: str) -> PageRequest:
        return replace(request, params={**request.params, self.param: token})


@dataclass(frozen=True)
class NextLinkPaginator:
    """Recurly v3 lists: request the ``next`` path verbatim while ``has_more``.

    Example page::

        {"object": "list", "has_more": true,
         "next": "/accounts?cursor=qx4e2a9v%3A1700000000&limit=200&order=asc&sort=updated_at",
         "data": [{"id": "qx4e2a9v", "object": "account", ...}]}

    gives next token ``"/accounts?cursor=…"``; the next request is that path with no extra
    parameters (the cursor link already carries them all).
    """

    def items(self, body: Any) -> list[Any]:
        return list(body.get("data") or [])

    def next_token(self, body: Any) -> str | None:
        if not body.get("has_more"):
            return None
        link = body.get("next")
        return str(link) if link else None

    def apply(self, request: PageRequest, token: str) -> PageRequest:
        return replace(request, url=token, params={})


@dataclass(frozen=True)
class AfterCursorPaginator:
    """GoCardless lists: ``after=meta.cursors.after`` until it is null.

    Example page::

        {"customers": [{"id": "CU001", ...}],
         "meta": {"cursors": {"before": null, "after": "CU001"}, "limit": 500}}

    gives next token ``"CU001"`` and the next request ``?after=CU001``.
    """

    resource: str

    def items(self, body: Any) -> list[Any]:
        return list(body.get(self.resource) or [])

    def next_token(self, body: Any) -> str | None:
        token = _dig(body, ("meta", "cursors", "after"))
        return str(token) if token else None

    def apply(self, request: PageRequest, token: str) -> PageRequest:
        return replace(request, params={**request.params, "after": token})


@dataclass(frozen=True)
class GraphQLCursorPaginator:
    """GraphQL connections (Braintree): ``variables.after = pageInfo.endCursor`` while ``hasNextPage``.

    ``connection`` is the path of the connection object in the body. Example page for
    ``connection=("data", "search", "customers")``::

        {"data": {"search": {"customers": {
            "pageInfo": {"hasNextPage": true, "endCursor": "Y3VyOjUw"},
            "edges": [{"cursor": "Y3VyOjQ5", "node": {"id": "Y3VzdG9tZXJfMQ", ...}}]}}}}

    gives next token ``"Y3VyOjUw"``; the next request is the same POST with ``variables.after`` set.
    Items are the ``node`` of each edge.
    """

    connection: tuple[str, ...]

    def items(self, body: Any) -> list[Any]:
        edges = _dig(body, (*self.connection, "edges")) or []
        return [edge.get("node") for edge in edges if isinstance(edge, dict)]

    def next_token(self, body: Any) -> str | None:
        info = _dig(body, (*self.connection, "pageInfo")) or {}
        if not info.get("hasNextPage"):
            return None
        token = info.get("endCursor")
        return str(token) if token else None

    def apply(self, request: PageRequest, token: str) -> PageRequest:
        payload = dict(request.json_body or {})
        payload["variables"] = {**(payload.get("variables") or {}), "after": token}
        return replace(request, json_body=payload)


def id_batches(ids: Sequence[str], page_size: int) -> Iterator[list[str]]:
    """Split the ids of a search (Braintree XML ``advanced_search_ids``) into fetch batches.

    Example: ``<search-results><page-size>50</page-size><ids><item>s1</item>…</ids>`` with 120 ids
    yields batches of 50, 50 and 20 ids, each fetched with one ``advanced_search`` POST.

    Raises:
        PaginationLoopError: when an id repeats (the search result is inconsistent; fetching it
            would duplicate records).
    """
    if page_size <= 0:
        raise ValueError("page_size must be positive")
    seen: set[str] = set()
    for start in range(0, len(ids), page_size):
        batch = list(ids[start : start + page_size])
        for item in batch:
            if item in seen:
                raise PaginationLoopError(f"search results repeat id {item!r}: refusing to page in a loop")
            seen.add(item)
        yield batch


def fetch_pages(
    client: HttpClient,
    request: PageRequest,
    paginator: Paginator,
    *,
    start_token: str | None = None,
) -> Iterator[Page]:
    """Yield every page of a list, whole, following ``paginator`` from ``start_token``.

    Args:
        client: the source's HTTP client (retries and errors are its business).
        request: the first request (filters, page size).
        paginator: the pagination style.
        start_token: resume from this token (a cursor committed by an earlier, interrupted run).

    Raises:
        PaginationLoopError: when the API returns a token already followed in this run.
    """
    token = start_token
    seen: set[str] = {token} if token else set()
    current = paginator.apply(request, token) if token else request
    while True:
        body = client.request_json(current)
        next_token = paginator.next_token(body)
        yield Page(paginator.items(body), body, token, next_token)
        if next_token is None:
            return
        if next_token in seen:
            raise PaginationLoopError(
                f"{client.source}: {current.method} {request.url.split('?', 1)[0]} returned page token "
                f"{next_token[:60]!r} a second time: refusing to page in a loop"
            )
        seen.add(next_token)
        token = next_token
        current = paginator.apply(request, next_token)


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_SLICE_DONE = object()


def fetch_slices(
    client: HttpClient,
    slices: Sequence[tuple[PageRequest, str | None]],
    paginator: Paginator,
    map_items: Callable[[list[Any]], T],
    *,
    workers: int,
) -> Iterator[tuple[int, Page, T]]:
    """Page several disjoint slices of one list at once; yield ``(slice index, page, map_items(page.items))``.

    A cursor chains the pages of one list, so one list is read a page at a time; a list split by a filter
    into slices (customers created in disjoint time ranges) is several lists, and ``workers`` of them
    are paged at once. Each slice is paged in order by one thread, which also maps its pages (mapping may
    send requests of its own: a page's subscriptions), so a slice's pages come in order while pages of
    different slices interleave as they finish. At most ``2 * workers`` mapped pages wait here, so
    memory stays bounded by the consumer's pace.

    Args:
        slices: each slice's first request and the token to resume it from (None: its first page).
        map_items: what each page's items become, run on the slice's thread.
        workers: slices paged at once.

    Raises:
        The first error of any slice (``ApiError``, ``PaginationLoopError``, what ``map_items`` raised),
        after the pages handed over before it; the other slices stop at their next page.
    """
    if not slices:
        return
    results: queue.Queue[Any] = queue.Queue(maxsize=2 * max(1, workers))
    stop = threading.Event()

    def put(item: Any) -> bool:
        return put_unless_stopped(results, item, stop)

    def page_slice(index: int, request: PageRequest, token: str | None) -> None:
        try:
            for page in fetch_pages(client, request, paginator, start_token=token):
                if stop.is_set() or not put((index, page, map_items(page.items))):
                    return
            put(_SLICE_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failed(exc))

    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(slices))), thread_name_prefix="funnelsync-slice")
    try:
        for index, (request, token) in enumerate(slices):
            pool.submit(page_slice, index, request, token)
        open_slices = len(slices)
        while open_slices:
            item = results.get()
            if item is _SLICE_DONE:
                open_slices -= 1
            elif isinstance(item, _Failed):
                raise item.exc
            else:
                yield item
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
