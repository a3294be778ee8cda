"""Intercom (REST API 2.14): companies become customers, with the contacts linked to them.

Reads top to bottom: constants, how to page, how a company and its contacts map to our record, the integration's
rule ("Intercom: companies become customers; only contacts linked to a company are imported; lead
created date: the trial date; free trial started date: company created date").

Streams:

- ``companies`` (key ``id``, cursor ``updated_at``): ``POST /companies/list?per_page=50``, the documented
  "List all companies" (``GET /companies`` is the retrieve endpoint, by ``company_id`` or ``name``), paged
  by ``?page=`` while ``page < total_pages`` (a ``pages.next.starting_after`` cursor, or ``pages.next``
  as a URL, is followed too); past 10,000 companies, the scroll API. For each company,
  ``GET /companies/{id}/contacts`` lists the contacts linked to it (``concurrency`` companies at a
  time). On an incremental run the list is paged again (the endpoint has no ``updated_at`` filter) but
  only companies updated since the watermark minus the lookback are rebuilt, so unchanged companies
  cost no contact requests.
- ``contacts`` (change feed): ``POST /contacts/search`` on ``updated_at`` ascending; a contact that
  changed (or was attached to a company) names its companies, which are rebuilt whole. Intercom's date
  filters match whole days in the workspace time zone (``>`` starts the next day), so the filter is
  ``updated_at > (watermark − lookback)`` with a lookback of at least a day, and results are de-duplicated
  by company.

Rule: the company's created date is ``remote_created_at`` (when your app created it, if you send it) or
else ``created_at`` (when Intercom first saw it). Free trial started = that date; lead created = the trial
date, i.e. the same moment. Contacts not linked to any company are never imported.
All times are epoch seconds. Intercom reports no subscriptions, so records carry none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from connectors.base import Batch, Connector, Feed, Setting, Stream, map_concurrently
from connectors.http import ApiError
from connectors.paging import PageRequest, fetch_pages
from connectors.push import WebhookContext, WebhookDelivery, WebhookReceiver, json_body, require_object
from connectors.signatures import WebhookPayloadError, verify_intercom_signature
from funnelsync.normalize import clean_text
from funnelsync.records import ContactRecord, SourceCustomerRecord
from funnelsync.timeutil import epoch_seconds, from_epoch

BASE_URL = "https://api.intercom.io"  # EU: https://api.eu.intercom.io, AU: https://api.au.intercom.io
API_VERSION = "2.14"
COMPANY_PAGE_SIZE = 50  # /companies/list allows up to 60
COMPANY_LIST = "/companies/list"  # POST; ``GET /companies`` retrieves one company by company_id or name
CONTACT_PAGE_SIZE = 150  # /contacts and /contacts/search allow up to 150
LOOKBACK_SECONDS = 86_400  # search filters dates by whole days
LIST_LIMIT = 10_000  # /companies/list returns at most this many companies: scroll beyond


@dataclass(frozen=True)
class IntercomPaginator:
    """Intercom lists: cursor (``pages.next.starting_after``) or, on older endpoints, page numbers.

    Example page (2.14)::

        {"type": "list", "data": [{"type": "company", "id": "6657a1f0…", ...}], "total_count": 120,
         "pages": {"type": "pages", "page": 1, "per_page": 50, "total_pages": 3,
                   "next": {"page": 2, "starting_after": "WzE3MTY1NjQ4MDAwMDAsIjY2NTdhMWYwIl0="}}}

    gives token ``"WzE3…"``, sent as ``?starting_after=`` (GET) or ``pagination.starting_after`` (a
    search POST). A page without a cursor but with ``page < total_pages`` (or ``next`` as a URL with
    ``page=``) gives token ``"page:2"``, sent as ``?page=2``.
    """

    list_key: str = "data"

    def items(self, body: Any) -> list[Any]:
        return list(body.get(self.list_key) or body.get("companies") or [])

    def next_token(self, body: Any) -> str | None:
        pages = body.get("pages") or {}
        nxt = pages.get("next")
        if isinstance(nxt, dict) and nxt.get("starting_after"):
            return str(nxt["starting_after"])
        if isinstance(nxt, str) and nxt:
            page = parse_qs(urlsplit(nxt).query).get("page")
            return f"page:{page[0]}" if page else None
        if isinstance(nxt, dict) and nxt.get("page"):
            return f"page:{nxt['page']}"
        page, total = pages.get("page"), pages.get("total_pages")
        if isinstance(page, int) and isinstance(total, int) and page < total and body.get(self.list_key):
            return f"page:{page + 1}"
        return None

    def apply(self, request: PageRequest, token: str) -> PageRequest:
        # Page numbers are query parameters, also of a POST (``/companies/list?page=2``).
        if token.startswith("page:"):
            return replace(request, params={**request.params, "page": token[5:]})
        if request.method == "POST":
            body = dict(request.json_body or {})
            body["pagination"] = {**(body.get("pagination") or {}), "starting_after": token}
            return replace(request, json_body=body)
        return replace(request, params={**request.params, "starting_after": token})


@dataclass
class IntercomScrollPaginator:
    """``GET /companies/scroll``: pass ``scroll_param`` back until a page comes back empty.

    Example page::

        {"type": "list", "data": [{"type": "company", "id": "6657a1f0…", ...}],
         "scroll_param": "25b649f7-4d33-4ef6-88f5-60e5b8244309"}

    The scroll parameter may stay the same for the whole scroll, so the token adds the page number
    (``"25b649f7-…#2"``) for the loop check; ``apply`` sends only the parameter. A scroll expires after a
    minute unused, so an interrupted scroll is restarted, never resumed.
    """

    pages: int = 0

    def items(self, body: Any) -> list[Any]:
        return list(body.get("data") or body.get("companies") or [])

    def next_token(self, body: Any) -> str | None:
        if not self.items(body) or not body.get("scroll_param"):
            return None
        self.pages += 1
        return f"{body['scroll_param']}#{self.pages}"

    def apply(self, request: PageRequest, token: str) -> PageRequest:
        return replace(request, params={"scroll_param": token.rsplit("#", 1)[0]})


def company_created_at(company: dict[str, Any]) -> int | None:
    """When the company was created: ``remote_created_at`` (your app's date) if sent, else ``created_at``."""
    for key in ("remote_created_at", "created_at"):
        value = company.get(key)
        if value not in (None, "", 0):
            return int(value)
    return None


def contact_record(contact: dict[str, Any], position: int) -> ContactRecord:
    """Map an Intercom contact (user or lead) to a ContactRecord of its company's customer."""
    name = clean_text(contact.get("name")) or ""
    first, _, last = name.partition(" ")
    social = {s.get("name"): s.get("url") for s in ((contact.get("social_profiles") or {}).get("data") or [])}
    return ContactRecord(
        external_id=str(contact["id"]),
        first_name=first or None,
        last_name=last.strip() or None,
        email=clean_text(contact.get("email")),
        phone=clean_text(contact.get("phone")),
        linked_in=clean_text(social.get("LinkedIn")),
        twitter=clean_text(social.get("Twitter")),
        custom={"role": contact["role"]} if contact.get("role") else {},
        position=position,
    )


def company_record(company: dict[str, Any], contacts: list[dict[str, Any]]) -> SourceCustomerRecord:
    """Map a company and the contacts linked to it to our record (the integration's rule)."""
    created = from_epoch(company_created_at(company))
    ordered = sorted(contacts, key=lambda c: (c.get("created_at") or 0, str(c.get("id"))))
    first_email = next((clean_text(c.get("email")) for c in ordered if clean_text(c.get("email"))), None)
    location = next(((c.get("location") or {}) for c in ordered if (c.get("location") or {}).get("country_code")), {})
    plan = (company.get("plan") or {}).get("name") if isinstance(company.get("plan"), dict) else None
    return SourceCustomerRecord(
        external_id=str(company["id"]),
        name=clean_text(company.get("name")) or clean_text(company.get("company_id")),
        email=first_email,
        company=clean_text(company.get("name")),
        country=_alpha2(location.get("country_code")),
        city=clean_text(location.get("city")),
        website_url=clean_text(company.get("website")),
        # The rule: lead created = the trial date; free trial started = company created date.
        lead_created_at=created,
        free_trial_started_at=created,
        subscriptions=[],
        contacts=[contact_record(c, i) for i, c in enumerate(ordered, 1)],
        custom={"intercom_plan": plan} if plan else {},
    )


def _alpha2(value: Any) -> str | None:
    # Intercom location.country_code is ISO alpha-3 on some workspaces ("USA"): only alpha-2 is kept.
    text = clean_text(value)
    return text.upper() if text and len(text) == 2 and text.isalpha() else None


def notification_company_ids(item: Any) -> list[str]:
    """Companies a webhook notification item is about: a company, a contact's companies, or both
    halves of a ``company.contact.attached`` item (``{"type": "contact_company", "company": …}``)."""
    if not isinstance(item, dict):
        return []
    if item.get("type") == "company" and item.get("id"):
        return [str(item["id"])]
    found: list[str] = []
    if isinstance(item.get("company"), dict) and item["company"].get("id"):
        found.append(str(item["company"]["id"]))
    companies = item.get("companies")
    refs = companies.get("data") if isinstance(companies, dict) else companies
    for ref in refs if isinstance(refs, list) else []:
        if isinstance(ref, dict) and ref.get("id"):
            found.append(str(ref["id"]))
    if isinstance(item.get("contact"), dict):
        found.extend(notification_company_ids(item["contact"]))
    return found


class IntercomConnector(Connector, WebhookReceiver):
    """Pull companies and their linked contacts from an Intercom workspace."""

    kind = "intercom"
    title = "Intercom"
    feeds = frozenset({Feed.PULLED, Feed.PUSHED})
    settings_schema = (
        Setting("access_token", secret=True, required=True, help="an access token of your Intercom app"),
        Setting("base_url", default=BASE_URL, help="API root (EU: https://api.eu.intercom.io)"),
        Setting("page_size", default=COMPANY_PAGE_SIZE, cast=int, help="companies per request, 1-60"),
        Setting("concurrency", default=4, cast=int, help="companies whose contacts are read in parallel"),
        Setting("lookback_seconds", default=LOOKBACK_SECONDS, cast=int, help="incremental runs re-read this far back"),
        Setting("webhook_secret", secret=True, help="the app's client secret (signs X-Hub-Signature)"),
    )
    streams = (
        Stream("companies", key="id", cursor_field="updated_at", reader="read_companies"),
        Stream("contacts", key="id", cursor_field="updated_at", reader="read_contact_changes"),
    )
    list_limit = LIST_LIMIT
    max_page_size = 60

    @property
    def lookback(self) -> int:
        return max(0, int(self.settings["lookback_seconds"]))

    def client_options(self) -> dict[str, Any]:
        return {
            "bearer_token": self.settings["access_token"],
            "headers": {"Intercom-Version": API_VERSION, "Accept": "application/json"},
            "credentials_hint": "check the access_token setting (an access token of your Intercom app, Developer Hub)",
        }

    # ------------------------------------------------------------------ streams

    def read_companies(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Every company with its contacts; incremental runs rebuild only companies updated since."""
        since = state.get("since")
        started = int(self.started_at.timestamp())

        # More companies than the list endpoint pages through: the scroll API reads them all, and an
        # interrupted scroll starts over (its parameter expired; upserts make re-reading harmless).
        probe = self.client.request_json(PageRequest(COMPANY_LIST, {"per_page": 1}, method="POST"))
        scroll = int((probe or {}).get("total_count") or 0) > self.list_limit
        if scroll:
            state = {k: v for k, v in state.items() if k != "page_token"}

        def request(_: Any) -> PageRequest:
            if scroll:
                return PageRequest("/companies/scroll")
            return PageRequest(COMPANY_LIST, {"per_page": self.page_size}, method="POST")

        def map_page(items: list[dict[str, Any]]) -> tuple[list[SourceCustomerRecord], int | None]:
            stamps = [int(c["updated_at"]) for c in items if c.get("updated_at")]
            changed = [
                c for c in items if since is None or int(c.get("updated_at") or started) >= since - self.lookback
            ]
            page_max = min(max(stamps), started) if stamps else None
            return self.records_for(changed), page_max

        paginator: Any = IntercomScrollPaginator() if scroll else IntercomPaginator()
        yield from self.read_list("companies", state, request, paginator, map_page)

    def read_contact_changes(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Companies whose contacts changed since the watermark, rebuilt whole."""
        started = int(self.started_at.timestamp())
        # The companies stream just read everything: only changes since it began matter.
        state = self.changes_from(state, timedelta(0), epoch_seconds)

        def request(since: int) -> PageRequest:
            return PageRequest(
                "/contacts/search",
                method="POST",
                json_body={
                    # ``>`` on a date starts at the NEXT midnight (workspace zone): stepping back at
                    # least a whole day is what makes the filter include ``since`` itself.
                    "query": {
                        "field": "updated_at",
                        "operator": ">",
                        "value": since - max(self.lookback, LOOKBACK_SECONDS),
                    },
                    "pagination": {"per_page": CONTACT_PAGE_SIZE},
                    "sort": {"field": "updated_at", "order": "ascending"},
                },
            )

        def map_page(items: list[dict[str, Any]]) -> tuple[list[SourceCustomerRecord], int | None]:
            company_ids = list(
                dict.fromkeys(
                    str(ref["id"])
                    for contact in items
                    for ref in ((contact.get("companies") or {}).get("data") or [])
                    if ref.get("id")
                )
            )
            companies = [c for c in map_concurrently(self.fetch_company, company_ids, self.workers) if c]
            stamps = [int(c["updated_at"]) for c in items if c.get("updated_at")]
            return self.records_for(companies), min(max(stamps), started) if stamps else None

        yield from self.read_list("contacts", state, request, IntercomPaginator(), map_page)

    # ------------------------------------------------------------------ reading one company

    @property
    def workers(self) -> int:
        return max(1, int(self.settings["concurrency"]))

    def fetch_company(self, company_id: str) -> dict[str, Any] | None:
        """``GET /companies/{id}``; None when it no longer exists."""
        try:
            return self.client.get_json(f"/companies/{quote(company_id, safe='')}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def company_contacts(self, company_id: str) -> list[dict[str, Any]]:
        """Every contact linked to the company (``GET /companies/{id}/contacts``, paged)."""
        request = PageRequest(f"/companies/{quote(company_id, safe='')}/contacts", {"per_page": CONTACT_PAGE_SIZE})
        return [c for page in fetch_pages(self.client, request, IntercomPaginator()) for c in page.items]

    def records_for(self, companies: list[dict[str, Any]]) -> list[SourceCustomerRecord]:
        """Complete records for companies: each with all its linked contacts."""
        contact_lists = map_concurrently(lambda c: self.company_contacts(str(c["id"])), companies, self.workers)
        return [company_record(c, contacts) for c, contacts in zip(companies, contact_lists, strict=True)]

    def fetch_record(self, company_id: str) -> SourceCustomerRecord | None:
        """One company re-read now (webhooks)."""
        company = self.fetch_company(company_id)
        return self.records_for([company])[0] if company else None

    # ------------------------------------------------------------------ webhooks

    @classmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """A notification signed with ``X-Hub-Signature``: the companies its item touches are read again."""
        verify_intercom_signature(body, headers.get("x-hub-signature"), str(settings.get("webhook_secret") or ""))
        note = require_object(json_body(body, "Intercom"), "Intercom notification")
        topic = note.get("topic")
        if not isinstance(topic, str) or not topic:
            raise WebhookPayloadError("Intercom notification lacks a topic")
        data = require_object(note.get("data"), "Intercom notification data")
        # ``*.deleted`` topics carry ids only, and the ping sent when a webhook is saved carries nothing.
        if topic == "ping" or topic.endswith(".deleted"):
            return WebhookDelivery([topic])
        return WebhookDelivery([topic], notification_company_ids(data.get("item")))
