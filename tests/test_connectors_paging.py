"""Paginators against respx routes that really page, and their loop detection."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from connectors.http import HttpClient
from connectors.paging import (
    AfterCursorPaginator,
    GraphQLCursorPaginator,
    NextLinkPaginator,
    OffsetTokenPaginator,
    PageRequest,
    PaginationLoopError,
    StripeCursorPaginator,
    fetch_pages,
    id_batches,
)

BASE = "https://api.example.test"


def client() -> HttpClient:
    return HttpClient("test", BASE, sleep_fn=lambda s: None)


@respx.mock
def test_stripe_starting_after_pages_whole_pages() -> None:
    ids = [f"cus_{i:03d}" for i in range(25)]

    def handler(request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params["limit"])
        after = request.url.params.get("starting_after")
        start = ids.index(after) + 1 if after else 0
        chunk = ids[start : start + limit]
        return httpx.Response(
            200,
            json={
                "object": "list",
                "has_more": start + limit < len(ids),
                "data": [{"id": i, "object": "customer"} for i in chunk],
            },
        )

    respx.get(f"{BASE}/v1/customers").mock(side_effect=handler)
    pages = list(fetch_pages(client(), PageRequest("/v1/customers", {"limit": 10}), StripeCursorPaginator()))
    assert [len(p.items) for p in pages] == [10, 10, 5]
    assert [p.token for p in pages] == [None, "cus_009", "cus_019"]
    assert [i["id"] for p in pages for i in p.items] == ids


@respx.mock
def test_stripe_resume_from_token() -> None:
    route = respx.get(f"{BASE}/v1/customers").mock(
        return_value=httpx.Response(200, json={"has_more": False, "data": [{"id": "cus_x"}]})
    )
    pages = list(
        fetch_pages(
            client(),
            PageRequest("/v1/customers", {"limit": 10}),
            StripeCursorPaginator(),
            start_token="cus_w",
        )
    )
    assert route.calls.last.request.url.params["starting_after"] == "cus_w"
    assert pages[0].token == "cus_w" and pages[0].next_token is None


@respx.mock
def test_chargebee_next_offset() -> None:
    offsets = {None: ('["1","a"]', [1, 2]), '["1","a"]': ('["2","b"]', [3]), '["2","b"]': (None, [4])}

    def handler(request: httpx.Request) -> httpx.Response:
        nxt, items = offsets[request.url.params.get("offset")]
        body: dict = {"list": [{"customer": {"id": str(i)}} for i in items]}
        if nxt:
            body["next_offset"] = nxt
        return httpx.Response(200, json=body)

    respx.get(f"{BASE}/api/v2/customers").mock(side_effect=handler)
    pages = list(
        fetch_pages(client(), PageRequest("/api/v2/customers", {"limit": 2}), OffsetTokenPaginator())
    )
    assert [[i["customer"]["id"] for i in p.items] for p in pages] == [["1", "2"], ["3"], ["4"]]


@respx.mock
def test_recurly_next_link_followed_verbatim() -> None:
    route = respx.get(f"{BASE}/accounts").mock(
        side_effect=[
            httpx.Response(
                200,
                json={
                    "object": "list",
                    "has_more": True,
                    "next": "/accounts?cursor=abc%3A123&limit=2&sort=updated_at",
                    "data": [{"id": "a1"}, {"id": "a2"}],
                },
            ),
            httpx.Response(
                200, json={"object": "list", "has_more": False, "next": None, "data": [{"id": "a3"}]}
            ),
        ]
    )
    pages = list(
        fetch_pages(
            client(), PageRequest("/accounts", {"limit": 2, "sort": "updated_at"}), NextLinkPaginator()
        )
    )
    assert [len(p.items) for p in pages] == [2, 1]
    second = route.calls[1].request.url
    assert second.params["cursor"] == "abc:123" and second.params["limit"] == "2"


@respx.mock
def test_gocardless_after_cursor() -> None:
    route = respx.get(f"{BASE}/customers").mock(
        side_effect=[
            httpx.Response(
                200,
                json={"customers": [{"id": "CU1"}], "meta": {"cursors": {"after": "CU1", "before": None}}},
            ),
            httpx.Response(
                200,
                json={"customers": [{"id": "CU2"}], "meta": {"cursors": {"after": None, "before": "CU2"}}},
            ),
        ]
    )
    pages = list(
        fetch_pages(client(), PageRequest("/customers", {"limit": 1}), AfterCursorPaginator("customers"))
    )
    assert [p.items[0]["id"] for p in pages] == ["CU1", "CU2"]
    assert route.calls[1].request.url.params["after"] == "CU1"


@respx.mock
def test_graphql_end_cursor() -> None:
    def page(has_next: bool, cursor: str, node_id: str) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "data": {
                    "search": {
                        "customers": {
                            "pageInfo": {"hasNextPage": has_next, "endCursor": cursor},
                            "edges": [{"cursor": cursor, "node": {"id": node_id}}],
                        }
                    }
                }
            },
        )

    route = respx.post(f"{BASE}/graphql").mock(side_effect=[page(True, "c1", "n1"), page(False, "c2", "n2")])
    request = PageRequest("/graphql", method="POST", json_body={"query": "q", "variables": {"first": 1}})
    pages = list(fetch_pages(client(), request, GraphQLCursorPaginator(("data", "search", "customers"))))
    assert [p.items[0]["id"] for p in pages] == ["n1", "n2"]
    assert json.loads(route.calls[1].request.content)["variables"] == {"first": 1, "after": "c1"}


@respx.mock
@pytest.mark.parametrize(
    ("paginator", "url", "bodies"),
    [
        (
            StripeCursorPaginator(),
            "/v1/customers",
            [
                {"has_more": True, "data": [{"id": "cus_1"}]},
                {"has_more": True, "data": [{"id": "cus_2"}]},
                {"has_more": True, "data": [{"id": "cus_1"}]},  # back to an earlier token
            ],
        ),
        (
            OffsetTokenPaginator(),
            "/api/v2/customers",
            [
                {"list": [{"customer": {"id": "1"}}], "next_offset": "o1"},
                {"list": [{"customer": {"id": "2"}}], "next_offset": "o1"},  # the same token again
            ],
        ),
        (
            NextLinkPaginator(),
            "/accounts",
            [
                {"has_more": True, "next": "/accounts?cursor=x", "data": [{"id": "a"}]},
                {"has_more": True, "next": "/accounts?cursor=x", "data": [{"id": "b"}]},
            ],
        ),
        (
            AfterCursorPaginator("customers"),
            "/customers",
            [
                {"customers": [{"id": "CU1"}], "meta": {"cursors": {"after": "CU1"}}},
                {"customers": [{"id": "CU1"}], "meta": {"cursors": {"after": "CU1"}}},
            ],
        ),
    ],
)
def test_repeated_token_raises(paginator: object, url: str, bodies: list[dict]) -> None:
    respx.route(url__startswith=f"{BASE}{url.split('?')[0]}").mock(
        side_effect=[httpx.Response(200, json=b) for b in bodies]
    )
    with pytest.raises(PaginationLoopError, match="a second time"):
        list(fetch_pages(client(), PageRequest(url), paginator))  # type: ignore[arg-type]


def test_id_batches() -> None:
    assert list(id_batches([str(i) for i in range(120)], 50)) == [
        [str(i) for i in range(50)],
        [str(i) for i in range(50, 100)],
        [str(i) for i in range(100, 120)],
    ]
    with pytest.raises(PaginationLoopError):
        list(id_batches(["a", "b", "a"], 2))
