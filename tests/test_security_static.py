"""Static security: every bandit exemption in the product's code says which check and why; XML from outside
is parsed without DTDs or entities (bandit B314, fixed with defusedxml rather than exempted).

``scripts/test`` runs bandit itself (before pytest); these tests keep its exemptions honest.
"""

from __future__ import annotations

import base64
import re
import tokenize
from pathlib import Path

import pytest

from connectors.braintree import _parse_xml
from connectors.http import ApiError
from connectors.signatures import WebhookPayloadError, parse_braintree_notification

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("connectors", "storage", "jobs", "flows", "api", "funnelsync", "automations")
# "# nosec B608 # our column names": the check's id, then a reason of at least two words.
JUSTIFIED = re.compile(r"#\s*nosec\s+B\d{3}(?:[ ,]+B\d{3})*\s+#\s*\S+\s+\S+")


def _comments(path: Path) -> list[tuple[int, str]]:
    with path.open("rb") as handle:
        return [(t.start[0], t.string) for t in tokenize.tokenize(handle.readline) if t.type == tokenize.COMMENT]


def test_every_nosec_names_its_check_and_a_reason() -> None:
    found, bare = 0, []
    for room in PRODUCT:
        for path in sorted((ROOT / room).rglob("*.py")) if (ROOT / room).is_dir() else []:
            for line, comment in _comments(path):
                if "nosec" not in comment:
                    continue
                found += 1
                # The comment token runs to the end of the line, so a chained "# noqa … # nosec …" is one token.
                if not JUSTIFIED.search(comment):
                    bare.append(f"{path.relative_to(ROOT)}:{line}: {comment}")
    assert found, "no nosec comment found at all: is the product's code where this test looks?"
    assert not bare, "bandit exemptions without a check id and a reason:\n" + "\n".join(bare)


# An internal entity is harmless by itself, but it is how the billion-laughs bomb and external-entity reads
# begin; a Braintree notification or gateway answer never declares one.
ENTITY_XML = (
    b'<?xml version="1.0"?><!DOCTYPE notification [<!ENTITY kind "subscription_canceled">]>'
    b"<notification><kind>&kind;</kind><timestamp>2026-03-01T08:15:00Z</timestamp></notification>"
)
BOMB_XML = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]><notification><kind>&lol3;</kind></notification>'
)
EXTERNAL_XML = (
    b'<?xml version="1.0"?><!DOCTYPE notification [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    b"<notification><kind>&secret;</kind></notification>"
)


@pytest.mark.parametrize("xml", [ENTITY_XML, BOMB_XML, EXTERNAL_XML], ids=["entity", "bomb", "external"])
def test_braintree_notification_with_entities_is_refused(xml: bytes) -> None:
    with pytest.raises(WebhookPayloadError, match="DTD or entities"):
        parse_braintree_notification(base64.b64encode(xml).decode())


@pytest.mark.parametrize("xml", [ENTITY_XML, BOMB_XML, EXTERNAL_XML], ids=["entity", "bomb", "external"])
def test_braintree_gateway_answer_with_entities_is_refused(xml: bytes) -> None:
    with pytest.raises(ApiError, match=r"bt-live: .*/customers/advanced_search.*DTD or entities"):
        _parse_xml(xml, "/customers/advanced_search", "bt-live")


def test_plain_braintree_xml_still_parses() -> None:
    root = _parse_xml(b"<customers><customer><id>c1</id></customer></customers>", "/customers", "bt-live")
    assert root.findtext("customer/id") == "c1"


def test_reliability_doc_names_only_tests_that_exist() -> None:
    """docs/reliability.md maps each promise to its tests: every file and test it names is there."""
    missing, named = [], 0
    for row in (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8").splitlines():
        files = re.findall(r"tests/[\w/]+\.py", row)
        sources = [(ROOT / f).read_text(encoding="utf-8") for f in files if (ROOT / f).is_file()]
        missing += [f for f in files if not (ROOT / f).is_file()]
        for name in re.findall(r"(?:::|`)(test_\w+)", row):
            named += 1
            if not any(re.search(rf"^def {name}\(", text, re.M) for text in sources):
                missing.append(name)
    assert named > 20 and not missing, missing
