"""HubSpot (CRM v3): contacts (or companies) in lifecycle stage ``lead`` or later become customer records.

The setting ``object_type`` chooses what a customer is: ``contacts`` (default) or ``companies`` (B2B
portals); the stream has that name and everything below applies to either (companies call their
modification date ``hs_lastmodifieddate``).

Reads top to bottom: constants, how to page (list and search, with the 10,000-result search cap), how a
contact maps to our record, the integration's rule.

Stream ``contacts`` (key ``id``, cursor ``lastmodifieddate`` as epoch milliseconds):

- first sync or ``--full-refresh``: ``GET /crm/v3/objects/contacts?limit=100&properties=…`` paged by
  ``paging.next.after`` (absent on the last page); an interrupted read resumes from the saved ``after``;
- incremental: ``POST /crm/v3/objects/contacts/search`` with ``lastmodifieddate GTE (since − lookback)``.
  Search answers at most 10,000 results per query (HTTP 400 beyond), so it sorts by ``hs_object_id``
  ascending and, before the next page would cross the cap, starts a new query window with
  ``hs_object_id GT <last id seen>`` (Airbyte's workaround). Sorting by id rather than by
  ``lastmodifieddate`` means a window restart never stalls on thousands of contacts sharing one
  timestamp (bulk imports do that). The lookback covers search lag (new contacts show up in search
  after a delay) and the watermark is clamped to the run's start, so a contact changed while the run
  was paging is read again next time.

The rule (docs/connectors.md): only contacts whose ``lifecyclestage`` is ``lead`` or later (setting
``lifecycle_stages``) become records; lead created = ``hs_lifecyclestage_lead_date``, else
``createdate``; free trial started = the property named by ``trial_property``, if configured.
Properties are strings: ISO datetimes (``2024-01-15T09:30:00.123Z``), date-only values of date
properties (``2024-01-15``, midnight UTC) or, from legacy v1 payloads, epoch milliseconds.

Deletions: archived (deleted) objects are left out of the list and cannot be searched, so every run
ends by listing ``GET …?archived=true`` (ids only) and removes those it holds. A webhook's
``contact.deletion`` / ``company.deletion`` / ``object.deletion`` event removes the object at once, once
a batch read confirms it is gone (deliveries come in no promised order: a restored object stays).

Rate limits: a 429 names the limit it hit in its body (``errorType: RATE_LIMIT``, ``policyName``
``TEN_SECONDLY_ROLLING`` or ``SECONDLY``) and usually carries no ``Retry-After``: the wait is the whole
rolling window (``X-HubSpot-RateLimit-Interval-Milliseconds`` when sent), so under contention a retry
does not land in the same window. A ``DAILY`` limit is not waited out (it resets at midnight).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any, cast
from urllib.parse import quote

import httpx

from connectors.base import Batch, Connector, Feed, Setting, Stream
from connectors.http import ApiError, body_json
from connectors.paging import PageRequest, fetch_pages
from connectors.push import Rereader, WebhookContext, WebhookDelivery, WebhookReceiver, json_body
from connectors.push import object_id as payload_id
from connectors.signatures import WebhookPayloadError, verify_hubspot_signature
from funnelsync.normalize import clean_text
from funnelsync.records import SourceCustomerDeletion, SourceCustomerRecord
from funnelsync.timeutil import parse_iso

BASE_URL = "https://api.hubapi.com"
OBJECTS_PATH = "/crm/v3/objects/{object_type}"
PAGE_SIZE = 100  # the list endpoint's maximum (search allows 200)
SEARCH_RESULT_CAP = 10_000  # search refuses ``after`` beyond this (HTTP 400)
LOOKBACK_MINUTES = 30
BATCH_READ_SIZE = 100  # ids per ``POST /crm/v3/objects/{type}/batch/read``

CONTACT_PROPERTIES = (
    "email",
    "firstname",
    "lastname",
    "company",
    "city",
    "state",
    "zip",
    "createdate",
    "lastmodifieddate",
    "lifecyclestage",
    "hs_lifecyclestage_lead_date",
    "hs_object_id",
)
COMPANY_PROPERTIES = (
    "name",
    "domain",
    "website",
    "city",
    "state",
    "zip",
    "country",
    "createdate",
    "hs_lastmodifieddate",
    "lifecyclestage",
    "hs_lifecyclestage_lead_date",
    "hs_object_id",
)
# The modification-date property, per object type (the search filter and the watermark).
MODIFIED_PROPERTY = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
# HubSpot's default lifecycle stages from ``lead`` on (subscriber comes before lead). Portals with
# custom stages add their internal values to the ``lifecycle_stages`` setting.
LEAD_OR_LATER = ("lead", "marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer", "evangelist")
# Webhook subscription types whose object is read again, and the generic ``object.*`` events with the
# objectTypeId of contacts (0-1) and companies (0-2).
WEBHOOK_EVENTS = {
    "contacts": frozenset({"contact.creation", "contact.propertyChange", "contact.restore", "contact.merge",
                           "contact.associationChange"}),
    "companies": frozenset({"company.creation", "company.propertyChange", "company.restore", "company.merge",
                            "company.associationChange"}),
}
OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2"}
OBJECT_EVENTS = frozenset({"object.creation", "object.propertyChange", "object.restore", "object.merge"})
# Deletions a subscription may deliver: the legacy ``contact.deletion`` / ``company.deletion``, a GDPR
# ``contact.privacyDeletion`` (sent with a ``contact.deletion`` too) and the generic ``object.deletion``.
DELETION_EVENTS = {
    "contacts": frozenset({"contact.deletion", "contact.privacyDeletion"}),
    "companies": frozenset({"company.deletion"}),
}
OBJECT_DELETION = "object.deletion"


def parse_hubspot_time(value: Any) -> datetime | None:
    """A HubSpot property time: ISO datetime, date-only (midnight UTC) or epoch ms/s; None if empty.

    Raises:
        ValueError: for a value that is none of these.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    if text.isdigit():
        number = int(text)
        # Legacy APIs send epoch milliseconds; a 10-digit value is seconds.
        seconds = number / 1000 if number >= 100_000_000_000 else number
        return datetime.fromtimestamp(seconds, tz=UTC)
    if len(text) == 10 and text[4] == "-":
        day = date.fromisoformat(text)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    return parse_iso(text)


# The rolling windows HubSpot names in a 429's ``policyName``, in seconds.
RATE_LIMIT_WINDOWS = {"TEN_SECONDLY_ROLLING": 10.0, "SECONDLY": 1.0}


def rate_limit_wait(response: httpx.Response) -> float | None:
    """How long a HubSpot 429 asks to wait when it sends no ``Retry-After``: the window its body names.

    Example body: ``{"status": "error", "message": "You have reached your ten_secondly_rolling limit.",
    "errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING", …}``.
    """
    if response.status_code != 429:
        return None
    body = body_json(response)
    policy = str(body.get("policyName") or "").upper() if isinstance(body, dict) else ""
    window = RATE_LIMIT_WINDOWS.get(policy)
    if window is None:
        return None
    interval = response.headers.get("X-HubSpot-RateLimit-Interval-Milliseconds", "")
    if policy == "TEN_SECONDLY_ROLLING" and interval.isdigit() and int(interval) > 0:
        window = int(interval) / 1000
    return window


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class HubSpotPaginator:
    """Pages of the contacts list (``GET``) and of a search (``POST``), under one token scheme.

    List pages carry ``{"results": [...], "paging": {"next": {"after": "151", "link": "…"}}}``; the token
    is ``after`` itself and goes back as ``?after=151``.

    Search pages carry ``{"total": 12034, "results": [...], "paging": {"next": {"after": "100"}}}``; the
    token is ``"<min id>:<after>"``. While ``after`` stays within the cap the token keeps the window's
    ``min id``; when the next page would pass the 10,000th result it becomes ``"<last id>:"``: a new
    query window with ``hs_object_id GT <last id>`` from its first page. Ids only grow, so tokens never
    repeat and a resumed run re-creates the exact window from its saved token.
    """

    page_size: int
    cap: int = SEARCH_RESULT_CAP
    window_min_id: str = field(default="", init=False)

    def items(self, body: Any) -> list[Any]:
        return list(body.get("results") or [])

    def next_token(self, body: Any) -> str | None:
        after = (((body.get("paging") or {}).get("next") or {}).get("after"))
        if after in (None, ""):
            return None
        if "total" not in body:  # a list page, not a search
            return str(after)
        results = body.get("results") or []
        if results and int(after) + self.page_size > self.cap:
            return f"{results[-1]['id']}:"
        return f"{self.window_min_id}:{after}"

    def apply(self, request: PageRequest, token: str) -> PageRequest:
        if request.method != "POST":
            return replace(request, params={**request.params, "after": token})
        min_id, _, after = token.partition(":")
        self.window_min_id = min_id
        payload = dict(request.json_body)
        filters = list(payload["filterGroups"][0]["filters"])
        if min_id:
            filters.append({"propertyName": "hs_object_id", "operator": "GT", "value": min_id})
        payload["filterGroups"] = [{"filters": filters}]
        payload.pop("after", None)
        if after:
            payload["after"] = after
        return replace(request, json_body=payload)


class HubSpotConnector(Connector, WebhookReceiver):
    """Pull contacts at lifecycle stage lead or later from a HubSpot portal; receive its webhooks."""

    kind = "hubspot"
    title = "HubSpot"
    feeds = frozenset({Feed.PULLED, Feed.PUSHED})
    settings_schema = (
        Setting(
            "access_token",
            secret=True,
            required=True,
            help="a private-app access token (scope crm.objects.contacts.read)",
        ),
        Setting("base_url", default=BASE_URL, help="API root (a mock: http://127.0.0.1:8080)"),
        Setting("object_type", default="contacts", choices=("contacts", "companies"), help="what a customer is"),
        Setting("page_size", default=PAGE_SIZE, cast=int, help="objects per request, 1-100"),
        Setting("trial_property", help="internal name of the contact property holding the free-trial start"),
        Setting(
            "lifecycle_stages",
            default=",".join(LEAD_OR_LATER),
            help="comma-separated lifecycle stages (internal values) that make a contact a lead",
        ),
        Setting(
            "lookback_minutes", default=LOOKBACK_MINUTES, cast=int, help="incremental search re-reads this far back"
        ),
        Setting("webhook_client_secret", secret=True, help="the app's client secret (signs X-HubSpot-Signature-v3)"),
        Setting("webhook_url", help="the public target URL set in HubSpot, when a proxy rewrites the one we see"),
    )
    # Both are declared; an instance reads only the one its ``object_type`` names (see ``__init__``).
    streams = (
        Stream("contacts", key="id", cursor_field="lastmodifieddate", reader="read_contacts"),
        Stream("companies", key="id", cursor_field="hs_lastmodifieddate", reader="read_companies"),
    )
    search_result_cap = SEARCH_RESULT_CAP
    max_page_size = PAGE_SIZE

    def __init__(self, settings: Any, **options: Any) -> None:
        super().__init__(settings, **options)
        self.object_type = str(self.settings["object_type"])
        # An instance attribute shadowing the declared pair: the sync engine iterates ``connector.streams``.
        self.__dict__["streams"] = tuple(s for s in type(self).streams if s.name == self.object_type)

    @property
    def properties(self) -> list[str]:
        base = CONTACT_PROPERTIES if self.object_type == "contacts" else COMPANY_PROPERTIES
        extra = clean_text(self.settings.get("trial_property"))
        return list(base) + ([extra] if extra and extra not in base else [])

    @property
    def lead_stages(self) -> frozenset[str]:
        raw = str(self.settings.get("lifecycle_stages") or "")
        return frozenset(s.strip().lower() for s in raw.split(",") if s.strip())

    def client_options(self) -> dict[str, Any]:
        return {
            "bearer_token": self.settings["access_token"],
            "wait_hint": rate_limit_wait,
            "credentials_hint": "check the access_token setting (a private-app token with "
            f"crm.objects.{self.object_type}.read)",
        }

    # ------------------------------------------------------------------ the stream

    def read_contacts(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Every contact (list) or those modified since the watermark (search), page by page."""
        if self.object_type == "contacts":
            yield from self.read_objects(state)

    def read_companies(self, state: dict[str, Any], full_refresh: bool) -> Iterator[Batch]:
        """Every company (list) or those modified since the watermark (search), page by page."""
        if self.object_type == "companies":
            yield from self.read_objects(state)

    def read_objects(self, state: dict[str, Any]) -> Iterator[Batch]:
        """The shared reader of contacts and companies."""
        path = OBJECTS_PATH.format(object_type=self.object_type)
        modified_property = MODIFIED_PROPERTY[self.object_type]
        started_ms = _ms(self.started_at)
        lookback_ms = max(0, int(self.settings["lookback_minutes"])) * 60_000

        def request(since: int | None) -> PageRequest:
            if since is None:
                return PageRequest(
                    path,
                    {"limit": self.page_size, "properties": ",".join(self.properties), "archived": "false"},
                )
            return PageRequest(
                f"{path}/search",
                method="POST",
                json_body={
                    "filterGroups": [
                        {
                            "filters": [
                                {
                                    "propertyName": modified_property,
                                    "operator": "GTE",
                                    "value": str(since - lookback_ms),
                                }
                            ]
                        }
                    ],
                    "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
                    "properties": self.properties,
                    "limit": self.page_size,
                },
            )

        def map_page(items: list[dict[str, Any]]) -> tuple[list[SourceCustomerRecord], int | None]:
            stamps = []
            for item in items:
                modified = _time_or_none((item.get("properties") or {}).get(modified_property) or item.get("updatedAt"))
                if modified is not None:
                    stamps.append(_ms(modified))
            # Never past the run's start: an object changed while we page is read again next run.
            page_max = min(max(stamps), started_ms) if stamps else None
            return [r for r in (self.object_record(c) for c in items) if r is not None], page_max

        paginator = HubSpotPaginator(self.page_size, self.search_result_cap)
        cursor: dict[str, Any] = dict(state)
        for batch in self.read_list(self.object_type, state, request, paginator, map_page):
            cursor = batch.cursor
            yield batch
        if "page_token" not in cursor:
            yield from self.read_archived(cursor)

    def read_archived(self, cursor: dict[str, Any]) -> Iterator[Batch]:
        """Deletions of the archived objects (``archived=true`` lists only those), under the cursor reached.

        The list has no date filter, so it is read whole each run; ids never stored are ignored by the sync.
        """
        path = OBJECTS_PATH.format(object_type=self.object_type)
        request = PageRequest(path, {"limit": self.page_size, "archived": "true", "properties": "hs_object_id"})
        pages = fetch_pages(self.client, request, HubSpotPaginator(self.page_size, self.search_result_cap))

        def deletions(items: list[dict[str, Any]]) -> list[Any]:
            return [SourceCustomerDeletion(str(i["id"])) for i in items if i.get("archived") is True]

        yield from self.read_pages(self.object_type, pages, deletions, lambda page: dict(cursor))

    def fetch_records(self, object_ids: list[str]) -> list[SourceCustomerRecord]:
        """Objects re-read now in batches of 100 (``POST …/batch/read``); missing ids and non-leads skipped.

        A batch with unknown ids answers HTTP 207 with ``errors`` (category ``OBJECT_NOT_FOUND``) next
        to the ``results`` that exist.
        """
        found = self.live_objects(object_ids)
        records = (self.object_record(found[i]) for i in object_ids if i in found)  # the order asked in
        return [r for r in records if r is not None]

    def live_objects(self, object_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The objects of ``object_ids`` that exist (not archived), by id, in batches of 100."""
        path = OBJECTS_PATH.format(object_type=self.object_type)
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(object_ids), BATCH_READ_SIZE):
            chunk = object_ids[start : start + BATCH_READ_SIZE]
            body = self.client.post_json(
                f"{path}/batch/read", {"properties": self.properties, "inputs": [{"id": i} for i in chunk]}
            )
            found.update({str(item["id"]): item for item in (body or {}).get("results") or []})
        return found

    def fetch_record(self, object_id: str) -> SourceCustomerRecord | None:
        """One contact (or company) re-read now (webhooks); None when it is gone or not a lead (yet)."""
        path = OBJECTS_PATH.format(object_type=self.object_type)
        try:
            item = self.client.get_json(
                f"{path}/{quote(object_id, safe='')}", params={"properties": ",".join(self.properties)}
            )
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return self.object_record(item)

    # ------------------------------------------------------------------ webhooks

    @classmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """A JSON array of events signed with ``X-HubSpot-Signature-v3`` over the URL and the body."""
        # HubSpot signs the URL it called; behind a TLS-terminating proxy we see http:// for its https://,
        # and a rewriting proxy changes more: the ``webhook_url`` setting then names the public URL.
        url = context.url
        uris = [str(settings["webhook_url"])] if settings.get("webhook_url") else []
        if url:
            uris.append(url)
            if url.startswith("http://"):
                uris.append("https://" + url[len("http://") :])
        verify_hubspot_signature(
            "POST",
            uris,
            body,
            headers.get("x-hubspot-signature-v3"),
            headers.get("x-hubspot-request-timestamp"),
            str(settings.get("webhook_client_secret") or ""),
        )
        events = json_body(body, "HubSpot")
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise WebhookPayloadError("HubSpot webhook body is not a JSON array of events")
        delivery = WebhookDelivery([str(e.get("subscriptionType") or "") for e in events])
        object_type = str(settings.get("object_type") or "contacts")
        for event in events:
            kind = event.get("subscriptionType")
            relevant = kind in WEBHOOK_EVENTS.get(object_type, ()) or (
                kind in OBJECT_EVENTS and str(event.get("objectTypeId")) == OBJECT_TYPE_IDS.get(object_type)
            )
            deletion = kind in DELETION_EVENTS.get(object_type, ()) or (
                kind == OBJECT_DELETION and str(event.get("objectTypeId")) == OBJECT_TYPE_IDS.get(object_type)
            )
            item_id = payload_id(event.get("objectId"), "HubSpot event objectId")
            if deletion and item_id:
                delivery.deleted.append(item_id)
            elif relevant and item_id:
                delivery.customer_ids.append(item_id)
        return delivery

    @classmethod
    def delivery_records(cls, connector: Rereader, delivery: WebhookDelivery) -> list[SourceCustomerRecord]:
        """The objects of a delivery in one batch read: HubSpot posts up to 100 events and wants an answer in 5 s.

        The objects its deletion events name are read too: HubSpot does not promise the order of its
        deliveries, so one that reads back (restored since) stays, and only those gone are removed.
        """
        hubspot = cast(HubSpotConnector, connector)
        ids = list(dict.fromkeys(delivery.customer_ids + delivery.deleted))
        found = hubspot.live_objects(ids) if ids else {}
        delivery.deleted[:] = [i for i in dict.fromkeys(delivery.deleted) if i not in found]
        records = (hubspot.object_record(found[i]) for i in dict.fromkeys(delivery.customer_ids) if i in found)
        return [r for r in records if r is not None]

    # ------------------------------------------------------------------ the mapping and the rule

    def is_lead(self, properties: dict[str, Any]) -> bool:
        """Lifecycle stage lead or later (the rule); a custom stage counts once HubSpot stamped a lead date."""
        stage = str(properties.get("lifecyclestage") or "").strip().lower()
        if stage in self.lead_stages:
            return True
        return bool(stage) and stage != "subscriber" and bool(properties.get("hs_lifecyclestage_lead_date"))

    def object_record(self, item: dict[str, Any]) -> SourceCustomerRecord | None:
        """A contact or a company, by the source's ``object_type``."""
        return self.contact_record(item) if self.object_type == "contacts" else self.company_record(item)

    def _dates(self, item: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
        # The rule: lead created = the lead lifecycle-stage date, else createdate; trial = the mapped property.
        props = item.get("properties") or {}
        lead_created = _time_or_none(props.get("hs_lifecyclestage_lead_date")) or _time_or_none(
            props.get("createdate") or item.get("createdAt")
        )
        trial_property = clean_text(self.settings.get("trial_property"))
        return lead_created, _time_or_none(props.get(trial_property)) if trial_property else None

    def company_record(self, company: dict[str, Any]) -> SourceCustomerRecord | None:
        """Map one company to our record, or None when it is not (yet) a lead."""
        props = company.get("properties") or {}
        if not self.is_lead(props):
            return None
        lead_created, trial_started = self._dates(company)
        country = clean_text(props.get("country"))
        domain = clean_text(props.get("domain"))
        return SourceCustomerRecord(
            external_id=str(company["id"]),
            name=clean_text(props.get("name")) or domain,
            company=clean_text(props.get("name")),
            website_url=clean_text(props.get("website")) or domain,
            # HubSpot's country is free text ("Germany"); only an alpha-2 code is kept.
            country=country.upper() if country and len(country) == 2 and country.isalpha() else None,
            state=clean_text(props.get("state")),
            city=clean_text(props.get("city")),
            zip=clean_text(props.get("zip")),
            lead_created_at=lead_created,
            free_trial_started_at=trial_started,
            subscriptions=[],
        )

    def contact_record(self, contact: dict[str, Any]) -> SourceCustomerRecord | None:
        """Map one contact to our record, or None when it is not (yet) a lead."""
        props = contact.get("properties") or {}
        if not self.is_lead(props):
            return None
        name = " ".join(p for p in (clean_text(props.get("firstname")), clean_text(props.get("lastname"))) if p)
        lead_created, trial_started = self._dates(contact)
        return SourceCustomerRecord(
            external_id=str(contact["id"]),
            name=name or None,
            email=clean_text(props.get("email")),
            company=clean_text(props.get("company")),
            state=clean_text(props.get("state")),
            city=clean_text(props.get("city")),
            zip=clean_text(props.get("zip")),
            lead_created_at=lead_created,
            free_trial_started_at=trial_started,
            # HubSpot reports no subscriptions: an empty set, so a record never claims unknown ones.
            subscriptions=[],
        )


def _time_or_none(value: Any) -> datetime | None:
    # A malformed date in a user-defined property must not stop the sync of the whole portal.
    try:
        return parse_hubspot_time(value)
    except ValueError:
        return None
