"""A fake Intercom API (2.14) on respx: companies paged by ``pages.next.starting_after``, company contacts
paged by page number, contact search with day-granular ``updated_at`` filters, real field names."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from fakes.base import DAY, FakeApi

BASE = "https://api.intercom.test"
TOKEN = "dG9rOmFiY2RlZl8xMjM0NTY3ODkwOjE6MA=="


def company_id(i: int) -> str:
    return f"6657a1f0e4b0{i:012x}"


class IntercomFake(FakeApi):
    """One company per person of the shared population, with 1-3 contacts each (the first a ``user``,
    others ``lead``s), plus contacts linked to no company (never imported)."""

    kind = "intercom"
    base_url = BASE
    main_path = "/companies/list"
    main_stream = "companies"
    api_key = TOKEN

    def __init__(self, n: int = 25, page_size: int = 10) -> None:
        super().__init__(n, page_size)
        self.companies: list[dict[str, Any]] = []
        self.contacts: list[dict[str, Any]] = []
        self.search_bodies: list[dict[str, Any]] = []
        self.scroll_position = 0
        for i, p in enumerate(self.people):
            company = {
                "type": "company", "id": company_id(i), "company_id": f"acct-{i}", "app_id": "abc123de",
                "name": p.company, "created_at": p.created + 120, "updated_at": p.updated,
                "remote_created_at": p.created if i % 2 == 0 else None,
                "last_request_at": p.updated, "monthly_spend": 0, "session_count": 3, "user_count": 1,
                "size": 10, "website": f"https://www.company{i}.example", "industry": "Software",
                "plan": {"type": "plan", "id": "269315", "name": "Pro"} if i % 3 == 0 else {},
                "custom_attributes": {}, "tags": {"type": "tag.list", "tags": []},
                "segments": {"type": "segment.list", "segments": []},
            }
            self.companies.append(company)
            for k in range(1 + i % 3):
                self.contacts.append(self.contact(f"{i}-{k}", p.email if k == 0 else f"lead{k}.{p.email}",
                                                  f"{p.first_name} {p.last_name}" if k == 0 else f"Lead{k} Person{i}",
                                                  "user" if k == 0 else "lead", p.created + k, p.updated, [company]))
        for j in range(3):  # contacts without a company: not imported
            self.contacts.append(self.contact(f"x{j}", f"loner{j}@example.org", f"Loner {j}", "lead",
                                              self.people[0].created, self.people[0].updated, []))

    def contact(self, suffix: str, email: str, name: str, role: str, created: int, updated: int,
                companies: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "type": "contact", "id": f"65f0c0ffee{suffix}", "workspace_id": "abc123de", "external_id": None,
            "role": role, "email": email, "phone": None, "name": name, "avatar": None,
            "owner_id": None, "social_profiles": {"type": "list", "data": []}, "has_hard_bounced": False,
            "created_at": created, "updated_at": updated, "signed_up_at": created if role == "user" else None,
            "last_seen_at": updated, "custom_attributes": {},
            "location": {"type": "location", "country": "Germany", "region": "Berlin", "city": "Berlin",
                         "country_code": "DE", "continent_code": "EU"},
            "companies": {"type": "list", "url": f"/contacts/65f0c0ffee{suffix}/companies",
                          "data": [{"type": "company", "id": c["id"], "url": f"/companies/{c['id']}"}
                                   for c in companies],
                          "total_count": len(companies), "has_more": False},
        }

    def settings(self, api_key: str | None = None) -> dict[str, Any]:
        return {"access_token": api_key or self.api_key, "base_url": self.base_url, "page_size": self.page_size,
                "concurrency": 1}

    def expected_ids(self) -> set[str]:
        return {c["id"] for c in self.companies}

    def authorised(self, request: httpx.Request) -> bool:
        return (request.headers.get("Authorization") == f"Bearer {self.api_key}"
                and request.headers.get("Intercom-Version") == "2.14")

    def unauthorised(self) -> httpx.Response:
        return httpx.Response(401, json={"type": "error.list", "request_id": "000on04m0a4apb1ms3r0",
                                         "errors": [{"code": "unauthorized", "message": "Access Token Invalid"}]})

    @staticmethod
    def cursor(index: int) -> str:
        return base64.b64encode(json.dumps([index]).encode()).decode()

    def cursor_page(
        self, items: list[dict[str, Any]], per_page: int, token: str | None, looping: bool
    ) -> dict[str, Any]:
        start = 0 if (token is None or looping) else json.loads(base64.b64decode(token))[0]
        page = items[start : start + per_page]
        pages: dict[str, Any] = {"type": "pages", "page": start // per_page + 1, "per_page": per_page,
                                 "total_pages": -(-len(items) // per_page)}
        if start + per_page < len(items):
            pages["next"] = {"page": pages["page"] + 1, "starting_after": self.cursor(start + per_page)}
        return {"type": "list", "data": page, "total_count": len(items), "pages": pages}

    def list_companies(self, request: httpx.Request) -> httpx.Response:
        """``POST /companies/list?page=&per_page=&order=`` ("List all companies", spec 2.14): page numbers,
        ``pages.next`` null on the last page, at most 10,000 companies."""
        per_page = int(request.url.params.get("per_page", 15))
        if per_page > 60:
            return httpx.Response(400, json={"type": "error.list", "errors": [{"code": "parameter_invalid"}]})
        page = 1 if self.loop_path == self.main_path else int(request.url.params.get("page", 1))
        if (page - 1) * per_page >= 10_000:
            return httpx.Response(400, json={"type": "error.list", "errors": [{"code": "parameter_invalid",
                                                                               "message": "page limit reached"}]})
        start = (page - 1) * per_page
        total_pages = -(-len(self.companies) // per_page)
        pages = {"type": "pages", "page": page, "per_page": per_page, "total_pages": total_pages,
                 "next": page + 1 if page < total_pages else None}
        return httpx.Response(200, json={"type": "list", "data": self.companies[start : start + per_page],
                                         "total_count": len(self.companies), "pages": pages})

    def retrieve_company(self, request: httpx.Request) -> httpx.Response:
        """``GET /companies?company_id=|name=`` retrieves ONE company (operationId ``retrieveCompany``)."""
        params = request.url.params
        wanted = [c for c in self.companies
                  if params.get("company_id") == c.get("company_id") or params.get("name") == c.get("name")]
        if not (params.get("company_id") or params.get("name")) or not wanted:
            return httpx.Response(404, json={"type": "error.list", "errors": [{"code": "company_not_found",
                                                                               "message": "Company Not Found"}]})
        return httpx.Response(200, json=wanted[0])

    def scroll_companies(self, request: httpx.Request) -> httpx.Response:
        # The same scroll_param throughout, as Intercom does; 10 a page; an empty page ends the scroll.
        param = request.url.params.get("scroll_param")
        start = 0 if param is None else self.scroll_position
        page = self.companies[start : start + 10]
        self.scroll_position = start + len(page)
        return httpx.Response(200, json={"type": "list", "data": page, "pages": None, "total_count": None,
                                         "scroll_param": "25b649f7-4d33-4ef6-88f5-60e5b8244309"})

    def find_company(self, cid: str) -> dict[str, Any] | None:
        return next((c for c in self.companies if c["id"] == cid), None)

    def get_company(self, request: httpx.Request) -> httpx.Response:
        company = self.find_company(request.url.path.split("/")[2])
        if company is None:
            return httpx.Response(404, json={"type": "error.list", "errors": [{"code": "company_not_found",
                                                                               "message": "Company Not Found"}]})
        return httpx.Response(200, json=company)

    def company_contacts(self, request: httpx.Request) -> httpx.Response:
        cid = request.url.path.split("/")[2]
        linked = [c for c in self.contacts if any(r["id"] == cid for r in c["companies"]["data"])]
        per_page = 2  # small pages: the connector must follow page numbers
        page = int(request.url.params.get("page", 1))
        data = linked[(page - 1) * per_page : page * per_page]
        return httpx.Response(200, json={"type": "list", "data": data, "total_count": len(linked),
                                         "pages": {"type": "pages", "page": page, "per_page": per_page,
                                                   "total_pages": max(1, -(-len(linked) // per_page))}})

    def search_contacts(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.search_bodies.append(body)
        query = body["query"]
        assert query["field"] == "updated_at" and query["operator"] == ">"
        # Intercom compares dates by whole days: "> t" starts at the next midnight.
        threshold = (int(query["value"]) // DAY + 1) * DAY
        matches = sorted((c for c in self.contacts if c["updated_at"] >= threshold), key=lambda c: c["updated_at"])
        per_page = int(body["pagination"]["per_page"])
        page = self.cursor_page(matches, per_page, body["pagination"].get("starting_after"), False)
        return httpx.Response(200, json=page)

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", r"/companies/list", self.list_companies),
            ("GET", r"/companies", self.retrieve_company),
            ("GET", r"/companies/scroll", self.scroll_companies),
            ("GET", r"/companies/[0-9a-f]+", self.get_company),
            ("GET", r"/companies/[0-9a-f]+/contacts", self.company_contacts),
            ("POST", r"/contacts/search", self.search_contacts),
        ]
