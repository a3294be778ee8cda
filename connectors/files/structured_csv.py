"""The strict templates of the structured CSV import (customers and contacts).

Unlike the flexible import, a structured file must use exactly these column names (any case): an
unknown or missing required column refuses the whole file before any row is written. Values follow the
flexible import's rules (dates, countries, emails). Sample files: ``funnelsync/templates/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from connectors.files.rows import FileUnreadable


@dataclass(frozen=True)
class Template:
    """A strict file layout (structured import): exact column names, some required in every row.

    ``columns`` maps each allowed column name (compared case-insensitively) to its mapping target.
    """

    name: str
    columns: dict[str, str]
    required: tuple[str, ...]
    unique_key: bool = True  # False: many rows may share a key (several contacts of one customer)

    def mapping_for(self, headers: list[str], label: str) -> dict[str, str]:
        """The ``--map`` equivalent of a header row, or a refusal naming the wrong columns.

        Raises:
            FileUnreadable: an unknown column, a repeated one, or a required one missing.
        """
        seen: dict[str, str] = {}
        unknown: list[str] = []
        for header in headers:
            clean = header.replace("\ufeff", "").strip()
            if not clean:
                continue
            key = clean.lower()
            if key not in self.columns:
                unknown.append(clean)
            elif key in seen:
                raise FileUnreadable(f"{label}: column {clean!r} appears twice")
            else:
                seen[key] = clean
        missing = [c for c in self.required if c not in seen]
        problems = []
        if unknown:
            problems.append(f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(repr(u) for u in unknown)}")
        if missing:
            problems.append(f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        if problems:
            raise FileUnreadable(
                f"{label} does not follow the {self.name} template: {'; '.join(problems)} "
                f"(allowed columns: {', '.join(self.columns)}; required: {', '.join(self.required)})"
            )
        return {original: self.columns[key] for key, original in seen.items()}

    @property
    def required_targets(self) -> tuple[str, ...]:
        """The mapping targets of the required columns."""
        return tuple(self.columns[c] for c in self.required)


CUSTOMERS = Template(
    name="customers",
    columns={
        "external_id": "external_id",
        "name": "name",
        "email": "email",
        "company": "company",
        "country": "country",
        "state": "state",
        "city": "city",
        "zip": "zip",
        "lead_created_at": "lead_created_at",
        "free_trial_started_at": "free_trial_started_at",
    },
    required=("external_id", "name"),
)

# A contact row names its customer by the customer's external id in the same data source.
CONTACTS = Template(
    name="contacts",
    columns={
        "customer_external_id": "external_id",
        "first_name": "contact.first_name",
        "last_name": "contact.last_name",
        "title": "contact.title",
        "email": "contact.email",
        "phone": "contact.phone",
        "linked_in": "contact.linked_in",
        "twitter": "contact.twitter",
        "notes": "contact.notes",
    },
    required=("customer_external_id",),
    unique_key=False,
)

TEMPLATES = {"customers": CUSTOMERS, "contacts": CONTACTS}
SAMPLES_DIR = Path(__file__).resolve().parents[2] / "funnelsync" / "templates"
