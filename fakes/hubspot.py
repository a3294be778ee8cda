"""A fake HubSpot CRM v3 contacts API on respx: list paging by ``after``, search with filters, sorts,
``after`` offsets and the result cap (HTTP 400 beyond it), real property names (all strings)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx

from fakes.base import FakeApi, FakePerson

BASE = "https://api.hubapi.test"
TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
STAGES = ("subscriber", "lead", "marketingqualifiedlead", "opportunity", "customer")


def iso_ms(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.") + "123Z"


class HubSpotFake(FakeApi):
    """Contacts built from the shared population; every fifth person (shape 0, even index) stays a
    ``subscriber`` and must not become a record. Trialing people carry a custom ``trial_started_at``."""

    kind = "hubspot"
    base_url = BASE
    main_path = "/crm/v3/objects/contacts"
    main_stream = "contacts"
    api_key = TOKEN
    search_cap = 10_000

    def __init__(self, n: int = 25, page_size: int = 10) -> None:
        super().__init__(n, page_size)
        self.search_bodies: list[dict[str, Any]] = []
        self.contacts = [self.contact(i, p) for i, p in enumerate(self.people)]
        self.archived: list[dict[str, Any]] = []

    def archive(self, contact_id: str, at: int) -> None:
        """``DELETE /crm/v3/objects/contacts/{id}``: the contact leaves the list, search and reads; it is
        listed only with ``archived=true``, as ``archived: true`` with ``archivedAt``."""
        contact = next(c for c in self.contacts if c["id"] == contact_id)
        self.contacts.remove(contact)
        self.archived.append({**contact, "archived": True, "archivedAt": iso_ms(at), "updatedAt": iso_ms(at)})

    def restore(self, contact_id: str, at: int) -> None:
        """Restoring an archived contact (the recycling bin, within 90 days): listed and searchable again,
        modified then."""
        contact = next(c for c in self.archived if c["id"] == contact_id)
        self.archived.remove(contact)
        stamp = iso_ms(at)
        contact = {k: v for k, v in contact.items() if k != "archivedAt"}
        self.contacts.append({**contact, "archived": False, "updatedAt": stamp,
                              "properties": {**contact["properties"], "lastmodifieddate": stamp}})
        self.contacts.sort(key=lambda c: c["id"])

    def id_prefix(self) -> str:
        return "5100"  # HubSpot ids are numeric strings: 510000000, 510000001, …

    def settings(self, api_key: str | None = None) -> dict[str, Any]:
        return {
            "access_token": api_key or self.api_key,
            "base_url": self.base_url,
            "page_size": self.page_size,
            "trial_property": "trial_started_at",
        }

    def stage(self, i: int) -> str:
        return "subscriber" if i % 10 == 0 else STAGES[1 + i % 4]

    def expected_ids(self) -> set[str]:
        gone = {c["id"] for c in self.archived}
        return {p.id for i, p in enumerate(self.people) if self.stage(i) != "subscriber" and p.id not in gone}

    def authorised(self, request: httpx.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"

    def unauthorised(self) -> httpx.Response:
        return httpx.Response(401, json={
            "status": "error", "message": "Authentication credentials not found. This API supports OAuth 2.0 "
            "authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            "correlationId": "9b0c2ba6-4c4f-4d0e-9f1c-5d3a1f1e8c11", "category": "INVALID_AUTHENTICATION"})

    def contact(self, i: int, p: FakePerson) -> dict[str, Any]:
        stage = self.stage(i)
        props: dict[str, Any] = {
            "createdate": iso_ms(p.created),
            "email": p.email,
            "firstname": p.first_name,
            "lastname": p.last_name,
            "company": p.company,
            "hs_object_id": p.id,
            "lastmodifieddate": iso_ms(p.updated),
            "lifecyclestage": stage,
            # Lead date one hour after creation for those that reached lead (HubSpot stamps it).
            "hs_lifecyclestage_lead_date": iso_ms(p.created + 3600) if stage != "subscriber" else None,
            "trial_started_at": None,
        }
        if p.subscriptions and p.subscriptions[0].trial_start:
            props["trial_started_at"] = iso_ms(p.subscriptions[0].trial_start)
        return {"id": p.id, "properties": props, "createdAt": props["createdate"],
                "updatedAt": props["lastmodifieddate"], "archived": False}

    def shaped(self, contact: dict[str, Any], wanted: list[str]) -> dict[str, Any]:
        # Properties come back only when requested (plus the three HubSpot always returns).
        keep = set(wanted) | {"createdate", "lastmodifieddate", "hs_object_id"}
        return {**contact, "properties": {k: v for k, v in contact["properties"].items() if k in keep}}

    def list_contacts(self, request: httpx.Request) -> httpx.Response:
        limit = min(100, int(request.url.params.get("limit", 10)))
        wanted = request.url.params.get("properties", "").split(",")
        after = request.url.params.get("after")
        # ``archived=true`` lists the archived objects only (and ``archived=false``, the default, the others).
        listed = self.archived if request.url.params.get("archived") == "true" else self.contacts
        # Real ``after`` tokens are opaque; here the id of the next contact. Loop mode ignores it.
        start = 0
        if after and self.loop_path != self.main_path:
            start = next(i for i, c in enumerate(listed) if c["id"] == after)
        page = listed[start : start + limit]
        body: dict[str, Any] = {"results": [self.shaped(c, wanted) for c in page]}
        if start + limit < len(listed):
            nxt = listed[start + limit]["id"]
            body["paging"] = {"next": {"after": nxt, "link": f"{BASE}{self.main_path}?after={nxt}"}}
        return httpx.Response(200, json=body)

    def get_contact(self, request: httpx.Request) -> httpx.Response:
        contact_id = request.url.path.rsplit("/", 1)[-1]
        wanted = request.url.params.get("properties", "").split(",")
        for contact in self.contacts:
            if contact["id"] == contact_id:
                return httpx.Response(200, json=self.shaped(contact, wanted))
        return httpx.Response(404, json={"status": "error",
                                         "message": "Object not found.  objectId are usually numeric.",
                                         "correlationId": "0b0c", "category": "OBJECT_NOT_FOUND"})

    def search(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.search_bodies.append(body)
        limit = min(200, int(body.get("limit", 10)))
        offset = int(body.get("after") or 0)
        if offset + limit > self.search_cap:
            return httpx.Response(400, json={
                "status": "error", "message": "There was a problem with the request.", "category": "VALIDATION_ERROR"})
        matches = self.contacts
        for flt in body["filterGroups"][0]["filters"]:
            name, op, value = flt["propertyName"], flt["operator"], flt["value"]
            if name == "lastmodifieddate" and op == "GTE":
                threshold = int(value)
                matches = [c for c in matches if _ms(c["properties"]["lastmodifieddate"]) >= threshold]
            elif name == "hs_object_id" and op == "GT":
                matches = [c for c in matches if int(c["id"]) > int(value)]
            else:
                return httpx.Response(400, json={"status": "error", "message": f"unsupported filter {flt}"})
        assert body["sorts"] == [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
        matches = sorted(matches, key=lambda c: int(c["id"]))
        page = matches[offset : offset + limit]
        out: dict[str, Any] = {"total": len(matches), "results": [self.shaped(c, body["properties"]) for c in page]}
        if offset + limit < len(matches):
            out["paging"] = {"next": {"after": str(offset + limit)}}
        return httpx.Response(200, json=out)

    def batch_read(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert len(body["inputs"]) <= 100
        by_id = {c["id"]: c for c in self.contacts}
        wanted = [i["id"] for i in body["inputs"]]
        results = [self.shaped(by_id[i], body["properties"]) for i in wanted if i in by_id]
        missing = [i for i in wanted if i not in by_id]
        out: dict[str, Any] = {"status": "COMPLETE", "results": results, "startedAt": "2025-01-01T00:00:00Z",
                               "completedAt": "2025-01-01T00:00:00.1Z"}
        if missing:
            out["errors"] = [{"status": "error", "category": "OBJECT_NOT_FOUND",
                              "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
                              "context": {"ids": missing}}]
            out["numErrors"] = 1
        return httpx.Response(207 if missing else 200, json=out)

    def routes(self) -> list[tuple[str, str, Any]]:
        return [
            ("POST", r"/crm/v3/objects/contacts/batch/read", self.batch_read),
            ("POST", r"/crm/v3/objects/contacts/search", self.search),
            ("GET", r"/crm/v3/objects/contacts/\d+", self.get_contact),
            ("GET", r"/crm/v3/objects/contacts", self.list_contacts),
        ]


def _ms(value: str) -> int:
    return int(datetime.fromisoformat(value).timestamp() * 1000)
