"""Email and website normalisation, table-driven."""

import pytest

from funnelsync.normalize import normalize_country, normalize_email, website_domain


@pytest.mark.parametrize(("raw", "expected"), [
    ("  Ada@Example.COM ", "ada@example.com"),
    ("j.doe+trial@gmail.com", "jdoe@gmail.com"),
    ("J.Doe@googlemail.com", "jdoe@gmail.com"),
    ("first.last+x@outlook.com", "first.last@outlook.com"),  # Outlook: +tags are aliases, dots are not
    ("first.last+x@example.com", "first.last+x@example.com"),  # unknown provider: nothing folded
    ("no-at-sign", None),
    ("@example.com", None),
    ("+x@gmail.com", None),
    ("", None),
    (None, None),
])
def test_normalize_email(raw, expected):
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("https://www.Acme.io/pricing", "acme.io"),
    ("acme.io", "acme.io"),
    ("http://app.acme.io:8080", "app.acme.io"),
    ("gmail.com", None),
    ("https://[", None),
    ("[", None),
    ("localhost", None),
    ("", None),
    (None, None),
])
def test_website_domain(raw, expected):
    assert website_domain(raw) == expected


def test_country():
    assert normalize_country(" us ") == "US"
    assert normalize_country("") is None
    with pytest.raises(ValueError, match="alpha-2"):
        normalize_country("USA")
