"""Which column of a customer file feeds which field: header matching, synonyms and ``--map``.

A header matches a field when the two are equal after lower-casing and dropping spaces, hyphens,
underscores and dots ("Lead Created At", "lead-created-at" and "LEAD_CREATED_AT" are one header), or
when it is one of the documented synonyms below. An explicit mapping (``"Signup Date=lead_created_at"``)
always wins, and a column mapped to ``ignore`` is skipped.

Targets are the customer fields, ``tags`` (a comma-separated list), ``custom.<key>`` (optionally typed:
``custom.seats:integer``) and ``contact.<field>`` for the one contact a row may carry.
Pure module: no storage, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from funnelsync.records import DATE_FIELDS, PROFILE_FIELDS

# The record model's own field lists, plus what a file may carry besides them.
CUSTOMER_FIELDS = (
    "external_id", *PROFILE_FIELDS, *DATE_FIELDS, "subscriber_since", "cancelled_at", "tags",
)
CONTACT_FIELDS = ("first_name", "last_name", "title", "email", "phone", "linked_in", "twitter", "notes")
DATE_TARGETS = frozenset({"lead_created_at", "free_trial_started_at", "subscriber_since", "cancelled_at"})
CUSTOM_TYPES = ("string", "integer", "decimal", "timestamp", "boolean")
IGNORE = "ignore"

# Header spellings (any case, spaces/hyphens/underscores/dots ignored) per target. The field's own name
# always matches and is not repeated here. Kept to spellings that cannot mean another field: "Status"
# is absent on purpose (a billing status is not a lead status), so is "Date" (which date?).
SYNONYMS: dict[str, tuple[str, ...]] = {
    "external_id": (
        "ID", "Customer ID", "Customer UUID", "UUID", "External ID", "Lead ID", "Account ID", "Client ID",
        "Record ID", "Contact ID", "User ID", "Customer Number", "Customer No",
    ),
    "name": ("Customer Name", "Full Name", "Lead Name", "Account Name", "Customer", "Client Name"),
    "email": ("E-mail", "Email Address", "E-mail Address", "Mail", "Customer Email", "Lead Email"),
    "company": ("Company Name", "Organization", "Organisation", "Organization Name", "Business", "Employer"),
    "country": ("Country Code", "Nation"),
    "state": ("Province", "Region", "State/Province", "State Code"),
    "city": ("Town", "Locality"),
    "zip": ("Zip Code", "Postal Code", "Postcode", "Post Code", "ZIP/Postal Code"),
    "website_url": ("Website", "URL", "Domain", "Web Site", "Homepage", "Company Website", "Site"),
    "owner": ("Lead Owner", "Account Owner", "Sales Rep", "Assigned To", "Customer Owner"),
    "lead_status": ("Lead Stage",),
    "lead_created_at": (
        "Signup Date", "Sign-up Date", "Signed Up", "Signed Up At", "Signup", "Created", "Created At",
        "Created Date", "Created On", "Date Created", "Lead Date", "Lead Created", "Lead Created Date",
        "Registration Date", "Registered At", "Registered",
    ),
    "free_trial_started_at": (
        "Trial Start", "Trial Started", "Trial Started At", "Trial Start Date", "Free Trial Start",
        "Free Trial Started", "Free Trial Start Date", "Trial Date",
    ),
    "subscriber_since": (
        "Customer Since", "Subscribed At", "Subscription Start", "First Payment", "First Payment Date",
        "First Paid At", "Converted At", "Conversion Date", "Paid Since",
    ),
    "cancelled_at": (
        "Canceled At", "Cancelled", "Canceled", "Cancellation Date", "Cancelation Date", "Churned At",
        "Churn Date",
    ),
    "tags": ("Tag", "Labels", "Label"),
    "contact.first_name": ("First Name", "Firstname", "Given Name", "Contact First Name"),
    "contact.last_name": ("Last Name", "Lastname", "Surname", "Family Name", "Contact Last Name"),
    "contact.title": ("Title", "Job Title", "Position", "Role"),
    "contact.email": ("Contact Email",),
    "contact.phone": ("Phone", "Phone Number", "Telephone", "Mobile", "Contact Phone"),
    "contact.linked_in": ("LinkedIn", "LinkedIn URL", "Linked In"),
    "contact.twitter": ("Twitter", "Twitter Handle", "X Handle"),
    "contact.notes": ("Notes", "Note", "Comments"),
}


def normalize_header(header: str) -> str:
    """The comparison form of a header: lower case without spaces, hyphens, underscores, dots, slashes.

    >>> normalize_header(" Lead_Created-At ")
    'leadcreatedat'
    """
    text = header.strip().lower()
    for char in (" ", "-", "_", ".", "/", "\t", "\ufeff"):
        text = text.replace(char, "")
    return text


def _build_lookup() -> dict[str, str]:
    lookup: dict[str, str] = {}
    for name in CUSTOMER_FIELDS:
        lookup[normalize_header(name)] = name
    for name in CONTACT_FIELDS:
        if name != "email":  # a bare "Email" is the customer's email
            lookup.setdefault(normalize_header(name), f"contact.{name}")
    for target, spellings in SYNONYMS.items():
        for spelling in spellings:
            key = normalize_header(spelling)
            if key in lookup and lookup[key] != target:
                raise AssertionError(f"synonym {spelling!r} claimed by {lookup[key]} and {target}")
            lookup[key] = target
    return lookup


HEADER_LOOKUP: dict[str, str] = _build_lookup()


class MappingError(ValueError):
    """A column mapping that cannot work: an unknown field, an unknown header, two columns for one field."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one column's values go: ``field`` is a customer field, ``tags``, ``custom.<key>`` or
    ``contact.<field>``; ``custom_type`` types a custom attribute."""

    field: str
    custom_type: str = "string"
    # Whether the header or --map named the custom attribute's type (``custom.seats:integer``); an
    # untyped column takes the attribute's declared type (``FlexibleCsvFile.attribute_types``).
    typed: bool = False

    @property
    def is_date(self) -> bool:
        """Whether the column holds dates (parsed with the date rules)."""
        return self.field in DATE_TARGETS or (self.field.startswith("custom.") and self.custom_type == "timestamp")


def parse_target(text: str) -> Target | None:
    """Validate a mapping target such as ``lead_created_at``, ``custom.plan:string`` or ``ignore``.

    Returns None for ``ignore``.

    Raises:
        MappingError: for an unknown field or custom attribute type.
    """
    spec = text.strip()
    if spec.lower() == IGNORE:
        return None
    if spec.startswith("custom."):
        key, _, kind = spec[len("custom."):].partition(":")
        typed = bool(kind.strip())
        key, kind = key.strip(), (kind.strip().lower() or "string")
        if not key:
            raise MappingError(f"{text!r}: name the custom attribute, e.g. custom.plan")
        if len(key) > 255:
            raise MappingError(f"{text!r}: a custom attribute key is at most 255 characters")
        if kind not in CUSTOM_TYPES:
            raise MappingError(f"{text!r}: custom attribute type must be one of {', '.join(CUSTOM_TYPES)}")
        return Target(f"custom.{key}", kind, typed)
    if spec.startswith("contact."):
        name = spec[len("contact."):].strip()
        if name not in CONTACT_FIELDS:
            raise MappingError(f"{text!r}: contact fields are {', '.join('contact.' + f for f in CONTACT_FIELDS)}")
        return Target(f"contact.{name}")
    if spec in CUSTOMER_FIELDS:
        return Target(spec)
    raise MappingError(
        f"unknown field {text!r}: use one of {', '.join(CUSTOMER_FIELDS)}, custom.<key>[:type], "
        f"contact.<field> or ignore"
    )


def parse_map_options(options: list[str] | None) -> dict[str, str]:
    """``["Signup Date=lead_created_at", …]`` → ``{"Signup Date": "lead_created_at"}``.

    The last ``=`` separates header from field, so a header may itself contain ``=``.

    Raises:
        MappingError: for an option without ``=``.
    """
    mapping: dict[str, str] = {}
    for option in options or []:
        header, sep, target = option.rpartition("=")
        if not sep or not header.strip() or not target.strip():
            raise MappingError(f"--map {option!r}: expected \"Header=field\"")
        mapping[header.strip()] = target.strip()
    return mapping


@dataclass(slots=True)
class HeaderMatch:
    """The outcome of matching a header row: one target (or None) per column index."""

    headers: list[str]
    targets: list[Target | None]
    ignored: list[str] = field(default_factory=list)

    def index_of(self, field_name: str) -> int | None:
        """The column index feeding ``field_name``, or None."""
        for index, target in enumerate(self.targets):
            if target is not None and target.field == field_name:
                return index
        return None

    def columns(self) -> dict[str, str]:
        """``{header: field}`` of the matched columns, for summaries."""
        return {self.headers[i]: t.field for i, t in enumerate(self.targets) if t is not None}


def match_headers(headers: list[str], explicit: dict[str, str] | None = None) -> HeaderMatch:
    """Assign a target to every column of a header row.

    Args:
        headers: the header cells, in file order.
        explicit: ``{header: target}`` from ``--map``; a header is found by its exact text first, then
            by its normalised form.

    Raises:
        MappingError: a ``--map`` header missing from the file, an unknown target, or two columns that
            would feed the same field (the message names both and how to choose).
    """
    clean = [h.replace("\ufeff", "").strip() for h in headers]
    targets: list[Target | None] = [None] * len(clean)
    decided = [False] * len(clean)
    by_exact = {h: i for i, h in reversed(list(enumerate(clean))) if h}
    by_norm = {normalize_header(h): i for i, h in reversed(list(enumerate(clean))) if h}
    for header, spec in (explicit or {}).items():
        index = by_exact.get(header.strip())
        if index is None:
            index = by_norm.get(normalize_header(header))
        if index is None:
            shown = ", ".join(repr(h) for h in clean if h) or "none"
            raise MappingError(f"--map names column {header!r}, which the file does not have (columns: {shown})")
        targets[index] = parse_target(spec)
        decided[index] = True
    explicit_fields = {t.field for t in targets if t is not None}
    claimed: dict[str, int] = {t.field: i for i, t in enumerate(targets) if t is not None}
    ignored: list[str] = []
    for index, header in enumerate(clean):
        if decided[index] or not header:
            continue
        norm = normalize_header(header)
        target: Target | None = None
        if header.startswith(("custom.", "contact.")):
            target = parse_target(header)
        elif norm in HEADER_LOOKUP:
            target = Target(HEADER_LOOKUP[norm])
        if target is None:
            ignored.append(header)
            continue
        if target.field in explicit_fields:
            ignored.append(header)  # --map chose another column for this field
            continue
        if target.field in claimed:
            other = clean[claimed[target.field]]
            raise MappingError(
                f"columns {other!r} and {header!r} both match {target.field}: choose one with "
                f"--map \"{other}={target.field}\" (the other is then ignored) or map it elsewhere"
            )
        claimed[target.field] = index
        targets[index] = target
    return HeaderMatch(clean, targets, ignored)
