"""The strict templates of the structured CSV import (customers and contacts).

Unlike the flexible import, a structured file must use exactly these column names (any case): an
unknown or missing required column refuses the whole file before any row is written. Values follow the
flexible import's rules (dates, countries, emails). Sample files: ``funnelsync/templates/``.
"""

from __future__ import annotations

from pathlib import Path

from connectors.files.flexible_csv import Template

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
