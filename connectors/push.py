"""What a kind that receives pushes declares, and the partial records of push-only integrations.

A kind fed by pushes (``Feed.PUSHED``) is a ``WebhookReceiver``: ``parse_webhook`` verifies a delivery
over its RAW body (``connectors.signatures``) and says what it is about, as a ``WebhookDelivery``. The
receiver at ``POST /webhooks/NAME`` does the rest, the same for every kind:

- a delivery of a pulled integration names customers (or objects that lead to them): they are read
  again through the source's connector (``delivery_records``), since events are thin and a record must carry
  its whole set of subscriptions; the connector applies the integration's rule;
- a push-only integration (Segment, Google Play's payloads URL) carries the records itself, each saying
  only some fields of a customer (an ``identify`` without an address, a purchase without a trial date):
  upserting it as a whole record would erase what the source said before, so a push produces a
  ``PartialRecord`` that is completed with the source's stored values (``complete``) before the upsert.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from connectors.http import HttpClient
from connectors.signatures import WebhookPayloadError
from funnelsync.records import SourceCustomerRecord, SubscriptionFact

# Where pushes arrive: endpoint name → the path after the host (``{source}`` is the source's name, and
# ``{call}`` a Segment call type). Routed by ``api.webhooks``; a kind lists the ones it serves.
WEBHOOK = "webhook"
SEGMENT_TRACKING = "segment-tracking"
APP_STORE_NOTIFICATIONS = "app-store-notifications"
GOOGLE_PLAY_RTDN = "google-play-rtdn"
ENDPOINTS = {
    WEBHOOK: "/webhooks/{source}",
    SEGMENT_TRACKING: "/segment/{source}/v1/{call}",
    APP_STORE_NOTIFICATIONS: "/app-store/{source}/notifications",
    GOOGLE_PLAY_RTDN: "/google-play/{source}/rtdn",
}

# What a stored source customer holds that a completed record carries over.
CARRIED = (
    "name", "email", "company", "country", "state", "city", "zip", "website_url", "owner", "lead_status",
    "lead_created_at", "free_trial_started_at",
)


@dataclass
class PartialRecord:
    """What one push says about one source customer.

    Attributes:
        external_id: the key within the source.
        fields: the fields the push sets (only non-empty values).
        custom: custom attributes the push sets (merged into the stored ones).
        tags: tags the push adds to the stored ones (None: it names none).
        creates: whether the push may create the record; False = update an existing record only.
        subscriptions: what the push says of some subscriptions (App Store and Google Play notifications
            each name one), merged by external id over the stored ones (``merge_subscription``); None:
            the push says nothing of subscriptions.
        by_subscription: ``external_id`` is the id of one of the source's subscriptions, not of a customer
            (Google Play's notifications name a purchase token only): the push applies to the customer
            that has it, and to none when no stored customer does.
    """

    external_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    creates: bool = True
    subscriptions: list[SubscriptionFact] | None = None
    by_subscription: bool = False
    tags: list[str] | None = None


def merge_subscription(stored: SubscriptionFact | None, pushed: SubscriptionFact) -> SubscriptionFact:
    """One subscription after a notification: its new state, the dates it names over the stored ones.

    A notification names the event it is about, not the subscription's history, so the trial start and
    the first payment already known are kept (the earliest first payment wins).
    """
    if stored is None:
        return pushed
    # A subscription never goes back to its trial: a purchase re-posted later says less than what
    # happened since.
    state = stored.state if pushed.state == "trialing" and stored.state != "trialing" else pushed.state
    paid = [d for d in (stored.first_paid_at, pushed.first_paid_at) if d is not None]
    return SubscriptionFact(
        external_id=pushed.external_id,
        state=state,
        trial_started_at=stored.trial_started_at or pushed.trial_started_at,
        trial_ended_at=pushed.trial_ended_at or stored.trial_ended_at,
        first_paid_at=min(paid) if paid else None,
        cancelled_at=(pushed.cancelled_at or stored.cancelled_at) if state == "cancelled" else None,
    )


def complete(
    partial: PartialRecord,
    stored: Mapping[str, Any] | None,
    stored_subscriptions: list[SubscriptionFact] | None = None,
) -> SourceCustomerRecord | None:
    """The whole record: the stored values overlaid with the push's; None when it may not be created.

    Contacts are left as stored (``None``): pushes never report them; so are subscriptions, unless the
    push names some: then the stored set with those merged in (``merge_subscription``).
    """
    if stored is None and not partial.creates:
        return None
    subscriptions = None
    if partial.subscriptions is not None:
        by_id = {s.external_id: s for s in stored_subscriptions or []}
        for fact in partial.subscriptions:
            by_id[fact.external_id] = merge_subscription(by_id.get(fact.external_id), fact)
        subscriptions = list(by_id.values())
    values: dict[str, Any] = {name: (stored or {}).get(name) for name in CARRIED}
    values.update(partial.fields)
    custom = dict((stored or {}).get("custom") or {})
    custom.update(partial.custom)
    tags = list((stored or {}).get("tags") or [])
    tags += [t for t in dict.fromkeys(partial.tags or []) if t not in tags]
    return SourceCustomerRecord(
        external_id=partial.external_id,
        tags=tags,
        custom=custom,
        subscriptions=subscriptions,
        contacts=None,
        **values,
    )


# --- a verified delivery ---------------------------------------------------------------------------


@dataclass
class WebhookDelivery:
    """What a verified delivery is about: its event names and how to find the affected customers.

    Attributes:
        events: the event (or call) names, in delivery order.
        customer_ids: customers to read again through the connector.
        lookups: objects whose customer the connector looks up first: (object type, id).
        partials: push-only integrations: the records the delivery itself carries (None for the others).
        skipped: calls acknowledged without a record (anonymous visitors, call types that carry none).
        deleted: customers the delivery says were deleted: their source customers are removed.
    """

    events: list[str]
    customer_ids: list[str] = field(default_factory=list)
    lookups: list[tuple[str, str]] = field(default_factory=list)
    partials: list[PartialRecord] | None = None
    skipped: int = 0
    deleted: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class WebhookContext:
    """What the receiver knows of a delivery besides its headers and body.

    Attributes:
        url: the URL it was received on (HubSpot signs it).
        api_key_valid: whether a funnelsync API key is live (Google Play's payloads URL authenticates
            with one).
        call: the call type a Segment tracking request names in its path (``batch``, ``identify``, …).
    """

    url: str = ""
    api_key_valid: Callable[[str], bool] = field(default=lambda key: False)
    call: str = ""


class Rereader(Protocol):
    """What the receiver uses of a connector to follow a delivery up: its client and one customer's record."""

    client: HttpClient

    def fetch_record(self, customer_id: str) -> SourceCustomerRecord | None:
        """The record of one customer read now, or None when it is gone or the rule excludes it."""


class WebhookReceiver(ABC):
    """A kind fed by pushes (``Feed.PUSHED``): how to verify and read one of its deliveries.

    Attributes:
        challenge_param: the query parameter of the integration's endpoint check (``GET /webhooks/NAME``),
            when it has one; ``answer_challenge`` answers it.
    """

    challenge_param: ClassVar[str | None] = None
    # The endpoints the kind receives on: ``WEBHOOK`` is ``POST /webhooks/NAME``; the others are the
    # vendors' own protocols (``ENDPOINTS`` says where each is routed).
    endpoints: ClassVar[frozenset[str]] = frozenset({WEBHOOK})

    @classmethod
    def parse_delivery(
        cls,
        endpoint: str,
        settings: Mapping[str, Any],
        headers: Mapping[str, str],
        body: bytes,
        context: WebhookContext,
    ) -> WebhookDelivery:
        """Verify and read a delivery that came to ``endpoint`` (one of ``endpoints``): ``parse_webhook``
        unless the kind reads its endpoints differently.

        Raises:
            as ``parse_webhook``.
        """
        if endpoint not in cls.endpoints:
            raise NotImplementedError(f"{cls.__name__} receives nothing at {endpoint!r}")
        return cls.parse_webhook(settings, headers, body, context)

    @classmethod
    @abstractmethod
    def parse_webhook(
        cls, settings: Mapping[str, Any], headers: Mapping[str, str], body: bytes, context: WebhookContext
    ) -> WebhookDelivery:
        """Verify a delivery over its raw body and say what it is about.

        Args:
            settings: the source's settings, secrets resolved.
            headers: the request headers, names in lower case.
            body: the raw body, byte for byte.
            context: the URL it came to, and how to check an API key.

        Raises:
            connectors.signatures.WebhookSignatureError: it does not prove where it came from (HTTP 401).
            connectors.signatures.WebhookPayloadError: authentic, but not what the integration sends (422).
            connectors.base.SettingsError: the source's settings cannot read it (500).
        """

    @classmethod
    def customers_of(cls, connector: Rereader, lookups: list[tuple[str, str]]) -> list[str]:
        """The customers of the objects a thin event names (read through ``connector``); none by default."""
        return []

    @classmethod
    def delivery_records(cls, connector: Rereader, delivery: WebhookDelivery) -> list[SourceCustomerRecord]:
        """Every customer the delivery affects (once), read again now through ``connector``."""
        ids = list(dict.fromkeys(delivery.customer_ids + cls.customers_of(connector, delivery.lookups)))
        records = []
        for customer_id in ids:
            record = connector.fetch_record(customer_id)
            if record is not None:
                records.append(record)
        return records

    @classmethod
    def answer_challenge(cls, settings: Mapping[str, Any], challenge: str) -> str:
        """The answer to an endpoint check (``GET /webhooks/NAME?<challenge_param>=…``)."""
        raise NotImplementedError(f"{cls.__name__} declares no endpoint check")


# --- reading a delivery's body ---------------------------------------------------------------------


def json_body(body: bytes, kind: str) -> Any:
    """The decoded JSON body of a verified delivery.

    Raises:
        WebhookPayloadError: the body is not JSON.
    """
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookPayloadError(f"{kind} webhook body is not JSON") from None


def require_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object.

    Raises:
        WebhookPayloadError: naming ``what`` is missing or not an object.
    """
    if not isinstance(value, dict):
        raise WebhookPayloadError(f"{what} is missing or not an object")
    return value


def object_id(value: Any, what: str) -> str | None:
    """An object id from a verified payload: a string or an integer; None when absent.

    Anything else (an object, a list) would be turned into a nonsense vendor URL and answered 502.

    Raises:
        WebhookPayloadError: the id is of another type.
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise WebhookPayloadError(f"{what} must be a string id, got {type(value).__name__}")
    return str(value)
