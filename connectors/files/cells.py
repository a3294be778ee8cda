"""Cell converters: one per column, chosen once; each raises ValueError with a reason.

Shared by the file imports and by manual and bulk edits, so a value reads the same way (and is refused
with the same message) wherever it is typed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal, InvalidOperation

from funnelsync.normalize import normalize_country
from funnelsync.records import LEAD_STATUSES

# Column widths of the storage schema, repeated here because a connector may not import storage: a
# longer value would make PostgreSQL refuse the whole batch, so it is an error of its row instead.
MAX_LENGTH = {
    "external_id": 255, "name": 255, "email": 320, "company": 255, "state": 100, "city": 255, "zip": 40,
    "website_url": 2048, "owner": 320, "tags": 255, "contact.first_name": 255, "contact.last_name": 255,
    "contact.title": 255, "contact.email": 320, "contact.phone": 100, "contact.linked_in": 2048,
    "contact.twitter": 255, "contact.notes": 100_000, "custom": 10_000,
}
LEAD_STATUS_BY_KEY = {s.lower().replace("_", ""): s for s in LEAD_STATUSES} | {
    s.lower().split("_")[0]: s for s in LEAD_STATUSES
}
# Common English names for ISO-3166 alpha-2 codes; anything else must be the code itself.
COUNTRY_NAMES = {
    "united states": "US", "united states of america": "US", "usa": "US", "u.s.": "US", "u.s.a.": "US",
    "america": "US", "united kingdom": "GB", "uk": "GB", "great britain": "GB", "england": "GB",
    "scotland": "GB", "wales": "GB", "germany": "DE", "deutschland": "DE", "france": "FR", "spain": "ES",
    "españa": "ES", "italy": "IT", "italia": "IT", "netherlands": "NL", "the netherlands": "NL",
    "holland": "NL", "belgium": "BE", "switzerland": "CH", "schweiz": "CH", "austria": "AT",
    "österreich": "AT", "ireland": "IE", "portugal": "PT", "sweden": "SE", "norway": "NO", "denmark": "DK",
    "finland": "FI", "iceland": "IS", "poland": "PL", "czech republic": "CZ", "czechia": "CZ",
    "hungary": "HU", "romania": "RO", "greece": "GR", "turkey": "TR", "türkiye": "TR", "russia": "RU",
    "ukraine": "UA", "canada": "CA", "mexico": "MX", "méxico": "MX", "brazil": "BR", "brasil": "BR",
    "argentina": "AR", "chile": "CL", "colombia": "CO", "peru": "PE", "australia": "AU",
    "new zealand": "NZ", "japan": "JP", "china": "CN", "south korea": "KR", "korea": "KR", "india": "IN",
    "singapore": "SG", "hong kong": "HK", "taiwan": "TW", "israel": "IL", "united arab emirates": "AE",
    "uae": "AE", "saudi arabia": "SA", "south africa": "ZA", "nigeria": "NG", "kenya": "KE", "egypt": "EG",
    "indonesia": "ID", "philippines": "PH", "vietnam": "VN", "thailand": "TH", "malaysia": "MY",
}
TRUE_WORDS = frozenset({"true", "yes", "y", "1", "t"})
FALSE_WORDS = frozenset({"false", "no", "n", "0", "f"})


def text_within(limit: int) -> Callable[[str], str]:
    def convert(value: str) -> str:
        if len(value) > limit:
            raise ValueError(f"longer than {limit} characters")
        return value

    return convert


def convert_email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or " " in value or len(value) > 320:
        raise ValueError("not an email address")
    return value


_COUNTRY_CACHE: dict[str, str] = {}


def convert_country(value: str) -> str:
    cached = _COUNTRY_CACHE.get(value)  # a country column holds a few hundred distinct values at most
    if cached is not None:
        return cached
    named = COUNTRY_NAMES.get(value.lower())
    if named:
        code = named
    else:
        try:
            code = normalize_country(value) or ""
        except ValueError:
            raise ValueError("not a country: use an ISO-3166 alpha-2 code such as US, DE or FR") from None
    if len(_COUNTRY_CACHE) < 10_000:
        _COUNTRY_CACHE[value] = code
    return code


def convert_lead_status(value: str) -> str:
    status = LEAD_STATUS_BY_KEY.get(value.lower().replace(" ", "").replace("_", "").replace("-", ""))
    if status is None:
        raise ValueError(f"not a lead status: use one of {', '.join(LEAD_STATUSES)}")
    return status


def convert_tags(value: str) -> list[str]:
    tags: list[str] = []
    for part in value.split(","):
        tag = part.strip()
        if tag and tag not in tags:
            if len(tag) > 255:
                raise ValueError("a tag is longer than 255 characters")
            tags.append(tag)
    return tags


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def convert_integer(value: str) -> int:
    try:
        number = int(value.replace("_", ""))
    except ValueError:
        raise ValueError("not an integer") from None
    # Past 64 bits the JSON columns hand it back rounded to a float (1e+23): refuse rather than corrupt it.
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise ValueError(f"an integer must fit in 64 bits ({_INT64_MIN} to {_INT64_MAX})")
    return number


def convert_decimal(value: str) -> float:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ValueError("not a decimal number (use a dot as decimal separator)") from None
    # "1e400" is finite as a Decimal but Infinity as a float, which --json and the API cannot print as JSON.
    if not number.is_finite() or not math.isfinite(float(number)):
        raise ValueError("not a finite number")
    return float(number)


def convert_boolean(value: str) -> bool:
    lowered = value.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError("not a boolean: use true/false, yes/no or 1/0")


def convert_custom_text(value: str) -> str:
    if len(value) > MAX_LENGTH["custom"]:
        raise ValueError(f"longer than {MAX_LENGTH['custom']} characters")
    return value


