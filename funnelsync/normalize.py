"""Pure normalisation rules shared by connectors, imports and storage: emails, domains, countries."""

from __future__ import annotations

from urllib.parse import urlsplit

# Free-mail domains: a website or email domain from these says nothing about which company a lead is.
FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com", "yahoo.com",
        "ymail.com", "aol.com", "icloud.com", "me.com", "mac.com", "proton.me", "protonmail.com",
        "gmx.com", "gmx.de", "gmx.net", "web.de", "mail.com", "yandex.com", "yandex.ru", "zoho.com",
        "fastmail.com", "hey.com", "qq.com", "163.com", "126.com",
    }
)
# Only where the provider documents dots and +tags as aliases of one mailbox may we fold them.
DOT_AND_PLUS_ALIAS_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
PLUS_ALIAS_DOMAINS = frozenset({"gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com",
                                "icloud.com", "me.com", "fastmail.com", "proton.me", "protonmail.com"})


def normalize_email(email: str | None) -> str | None:
    """Return the matching key of an email address, or None when it has none.

    Lowercase and trimmed; for providers where they are documented aliases, ``+tag`` suffixes (and for
    Gmail the dots) of the local part are dropped, and googlemail.com is read as gmail.com.

    >>> normalize_email("  J.Doe+trial@GoogleMail.com ")
    'jdoe@gmail.com'
    >>> normalize_email("j.doe+x@example.com")
    'j.doe+x@example.com'
    """
    if email is None:
        return None
    value = email.strip().lower()
    if "@" not in value:
        return None
    local, _, domain = value.rpartition("@")
    if not local or not domain:
        return None
    if domain in PLUS_ALIAS_DOMAINS:
        local = local.split("+", 1)[0]
    if domain in DOT_AND_PLUS_ALIAS_DOMAINS:
        local = local.replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}" if local else None


def website_domain(url: str | None) -> str | None:
    """Return the registrable-looking host of a website URL (``www.`` dropped), None for free-mail hosts.

    >>> website_domain("https://www.Acme.io/pricing")
    'acme.io'
    >>> website_domain("gmail.com") is None
    True
    """
    if not url:
        return None
    text = url.strip().lower()
    if not text:
        return None
    if "://" not in text:
        text = "http://" + text
    try:
        host = (urlsplit(text).hostname or "").strip(".")
    except ValueError:  # e.g. an unbalanced "[" reads as a broken IPv6 literal: not a website
        return None
    if host.startswith("www."):
        host = host[4:]
    if not host or "." not in host or host in FREE_MAIL_DOMAINS:
        return None
    return host


def normalize_country(value: str | None) -> str | None:
    """Upper-case a two-letter ISO-3166 alpha-2 code; refuse anything else.

    Raises:
        ValueError: when the value is not two letters.
    """
    if value is None:
        return None
    code = value.strip().upper()
    if not code:
        return None
    if len(code) != 2 or not code.isalpha():
        raise ValueError(f"country must be an ISO-3166 alpha-2 code such as 'US', got {value!r}")
    return code


def clean_text(value: object) -> str | None:
    """Strip a text value; empty becomes None."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None
