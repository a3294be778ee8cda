"""The record model shared by connectors and storage.

A connector turns whatever its source speaks into ``SourceCustomerRecord`` objects; storage upserts them.
Neither side knows the other: this module is the whole contract between them. Records are plain slotted
dataclasses rather than pydantic models because a million of them pass through an import and validation
happens once, at the edge (the connector's mapping or the CSV parser), not per hop.

Every datetime here is timezone-aware UTC; ``ensure_utc`` enforces it at construction time so a naive
datetime never reaches the database.
"""

from __future__ import annotations

import operator
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

SUBSCRIPTION_STATES = ("trialing", "active", "past_due", "cancelled")
LEAD_STATUSES = ("New_Lead", "Working_Lead", "Qualified_Lead", "Unqualified_Lead")
SUBSCRIBER_STATUSES = ("Active", "Past_Due", "Cancelled")
CUSTOMER_STATUSES = SUBSCRIBER_STATUSES + LEAD_STATUSES

# Profile fields a source reports and a user may override by hand; the projection treats them alike.
PROFILE_FIELDS = (
    "name",
    "email",
    "company",
    "country",
    "state",
    "city",
    "zip",
    "website_url",
    "owner",
    "lead_status",
)
DATE_FIELDS = ("lead_created_at", "free_trial_started_at")
# What ``SourceCustomerRecord.present`` may name besides ``custom.<key>``.
REPORTABLE_FIELDS = (*PROFILE_FIELDS, *DATE_FIELDS, "tags")
CONTACT_FIELDS = ("first_name", "last_name", "title", "email", "phone", "linked_in", "twitter", "notes")


C = TypeVar("C", bound=type)


def compact_pickle(cls: C) -> C:
    """Pickle a slotted dataclass as one tuple of its field values, restored without ``__init__``.

    Records cross a process boundary in bulk (a file parsed in a child process, ``jobs.readahead``).
    The default pickling of slotted objects goes through ``copyreg`` and a state per object, which costs
    more than the tuple of values it holds. Values were validated when the object was first built, so
    restoring skips ``__post_init__``.
    """
    names = tuple(cls.__slots__)  # type: ignore[attr-defined]
    getter = operator.attrgetter(*names)
    source = (
        "def restore(values):\n"
        "    obj = new(cls)\n"
        f"    {', '.join('obj.' + n for n in names)}, = values\n"
        "    return obj\n"
    )
    scope: dict[str, Any] = {"new": object.__new__, "cls": cls}
    exec(source, scope)  # noqa: S102  # nosec B102 # our own dataclass field names
    restore = scope["restore"]
    restore.__qualname__ = restore.__name__ = f"_restore_{cls.__name__}"
    restore.__module__ = cls.__module__
    setattr(sys.modules[cls.__module__], restore.__name__, restore)

    def __reduce__(self: Any) -> tuple[Any, tuple[Any, ...]]:
        values = getter(self)
        return restore, ((values,) if len(names) > 1 else ((values,),))

    setattr(cls, "__reduce__", __reduce__)  # noqa: B010 - mypy refuses the assignment to a method
    return cls


def ensure_utc(value: datetime | None, what: str = "datetime") -> datetime | None:
    """Return ``value`` converted to UTC, refusing naive datetimes.

    Args:
        value: an aware datetime or None.
        what: the field name, for the error message.

    Raises:
        ValueError: when ``value`` has no time zone.
    """
    if value is None:
        return None
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    if value.tzinfo is timezone.utc:
        return value
    return value.astimezone(timezone.utc)


@compact_pickle
@dataclass(slots=True)
class SubscriptionFact:
    """What a source says about one subscription, enough to derive status and conversion."""

    external_id: str
    state: str
    trial_started_at: datetime | None = None
    trial_ended_at: datetime | None = None
    first_paid_at: datetime | None = None
    cancelled_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.state not in SUBSCRIPTION_STATES:
            raise ValueError(f"subscription {self.external_id!r}: unknown state {self.state!r}")
        self.trial_started_at = ensure_utc(self.trial_started_at, "trial_started_at")
        self.trial_ended_at = ensure_utc(self.trial_ended_at, "trial_ended_at")
        self.first_paid_at = ensure_utc(self.first_paid_at, "first_paid_at")
        self.cancelled_at = ensure_utc(self.cancelled_at, "cancelled_at")


@compact_pickle
@dataclass(slots=True)
class ContactRecord:
    """A person attached to a customer, as one source reports it."""

    external_id: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    email: str | None = None
    phone: str | None = None
    linked_in: str | None = None
    twitter: str | None = None
    notes: str | None = None
    custom: dict[str, Any] = field(default_factory=dict)
    position: int = 1
    # The fields (of CONTACT_FIELDS) this record reports; None: all of them. A field it does not report
    # keeps its stored value when the contact is updated.
    present: frozenset[str] | None = None

    def key(self) -> str:
        """A stable identity within its source customer: the external id, else the email, else position."""
        if self.external_id:
            return f"id:{self.external_id}"
        if self.email:
            return f"email:{self.email.strip().lower()}"
        return f"pos:{self.position}"


@dataclass(frozen=True, slots=True)
class SourceCustomerDeletion:
    """A source's word that one of its customers was deleted (Stripe ``customer.deleted``, Chargebee
    ``deleted``, HubSpot archived, Recurly ``deleted_at``). A connector's page mapping returns it among
    its records; the sync removes that source customer."""

    external_id: str


@compact_pickle
@dataclass(slots=True)
class SourceCustomerRecord:
    """One customer as one data source last reported it, normalised.

    ``external_id`` is the key within the data source. Dates are aware UTC datetimes. ``raw`` keeps the
    source payload (or CSV row) for debugging and for re-mapping without a re-fetch; it does not take
    part in change detection.
    """

    external_id: str
    name: str | None = None
    email: str | None = None
    company: str | None = None
    country: str | None = None
    state: str | None = None
    city: str | None = None
    zip: str | None = None
    website_url: str | None = None
    owner: str | None = None
    lead_status: str | None = None
    lead_created_at: datetime | None = None
    free_trial_started_at: datetime | None = None
    # None = this record does not report subscriptions (or contacts): what is stored stays as it is.
    # A list (even empty) is the complete set the source knows for this customer and replaces it.
    subscriptions: list[SubscriptionFact] | None = None
    contacts: list[ContactRecord] | None = None
    tags: list[str] = field(default_factory=list)
    custom: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] | None = None
    # The fields this record reports (names of REPORTABLE_FIELDS, ``custom.<key>`` per custom
    # attribute, ``subscription.first_paid_at`` / ``subscription.cancelled_at`` for the dates of the
    # subscription facts it reports); None: all of them, the record replaces what its source said
    # before. A record that exists already keeps the stored value of every field it does not report
    # (a file mapping fewer columns, a cell left empty). A new record has None in them, as always.
    present: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not self.external_id or not str(self.external_id).strip():
            raise ValueError("a source customer needs a non-empty external_id")
        self.external_id = str(self.external_id)
        self.lead_created_at = ensure_utc(self.lead_created_at, "lead_created_at")
        self.free_trial_started_at = ensure_utc(self.free_trial_started_at, "free_trial_started_at")
        if self.lead_status is not None and self.lead_status not in LEAD_STATUSES:
            raise ValueError(
                f"customer {self.external_id!r}: lead_status must be one of {', '.join(LEAD_STATUSES)}, "
                f"got {self.lead_status!r}"
            )
