"""A fake Braintree on respx: GraphQL ``search.customers`` that pages by ``endCursor`` and the XML
gateway's ``advanced_search_ids`` / ``advanced_search`` (id batches), customer find and payment
method look-up, with the real element and field names (dashes in XML, camelCase in GraphQL).
"""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx

from fakes.base import DAY, FakeApi, FakePerson

GRAPHQL = "https://payments.braintree-api.com/graphql"
GATEWAY = "https://api.braintreegateway.com"
MERCHANT = "merch_123"
PUBLIC = "pub_key_abc"
PRIVATE = "priv_key_0123456789"
SETTINGS = {"merchant_id": MERCHANT, "public_key": PUBLIC, "private_key": PRIVATE}

ITEM_TAGS = {
    "transactions": "transaction",
    "subscriptions": "subscription",
    "credit_cards": "credit-card",
    "paypal_accounts": "paypal-account",
    "add_ons": "add-on",
    "discounts": "discount",
    "status_history": "status-event",
    "ids": "item",
}


def ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_xml(tag: str, value: Any) -> ET.Element:
    """A Python value → Braintree XML (dashes, ``type`` attributes) as the gateway writes it."""
    element = ET.Element(tag.replace("_", "-"))
    if value is None:
        element.set("nil", "true")
    elif isinstance(value, bool):
        element.set("type", "boolean")
        element.text = "true" if value else "false"
    elif isinstance(value, int):
        element.set("type", "integer")
        element.text = str(value)
    elif isinstance(value, list):
        element.set("type", "array")
        for item in value:
            element.append(to_xml(ITEM_TAGS.get(tag, "item"), item))
    elif isinstance(value, dict):
        for key, child in value.items():
            element.append(to_xml(key, child))
    else:
        if tag.endswith("_at") or tag == "timestamp":
            element.set("type", "datetime")
        elif tag.endswith("_date"):
            element.set("type", "date")
        element.text = str(value)
    return element


def xml_response(element: ET.Element) -> httpx.Response:
    body = ET.tostring(element, encoding="utf-8", xml_declaration=True)
    return httpx.Response(200, content=body, headers={"Content-Type": "application/xml; charset=utf-8"})


class BraintreeFake(FakeApi):
    """Customers, payment methods, subscriptions and transactions, served like Braintree does.

    Built from the suite's shared population: leads have no subscription, trialing people a trial
    subscription without transactions, converted and direct payers settled sales, abandoned trials a
    canceled subscription. A first import brings every customer.
    """

    kind = "braintree"
    base_url = GATEWAY
    main_path = "/graphql"
    main_stream = "customers"
    api_key = PRIVATE

    def __init__(self, n: int = 25, page_size: int = 10) -> None:
        super().__init__(n, page_size)
        self.customers: list[dict[str, Any]] = []  # XML-shaped (snake_case) customer dicts
        self.subscriptions: list[dict[str, Any]] = []
        self.transactions: list[dict[str, Any]] = []
        self.token_owner: dict[str, str] = {}
        self.requests: list[httpx.Request] = []
        self.xml_page_size = 4  # the gateway's advanced_search page size
        for person in self.people:
            self.add_person(person)

    def id_prefix(self) -> str:
        return "bt_"

    def settings(self, api_key: str | None = None) -> dict[str, Any]:
        # On respx the two APIs keep their own hosts; served locally (fakes.server) both share one.
        graphql = GRAPHQL if self.base_url == GATEWAY else f"{self.base_url}/graphql"
        return {
            **SETTINGS,
            "private_key": api_key or self.api_key,
            "base_url": graphql,
            "gateway_url": self.base_url,
            "page_size": self.page_size,
        }

    def expected_ids(self) -> set[str]:
        return {c["id"] for c in self.customers}

    def add_person(self, p: FakePerson) -> None:
        created = datetime.fromtimestamp(p.created, tz=UTC)
        customer_id = self.add_customer(0, created, cid=p.id, person=p)
        for sub in p.subscriptions:
            trial = None
            first_billing = created.date()
            if sub.trial_start is not None and sub.trial_end is not None:
                trial = (max(1, (sub.trial_end - sub.trial_start) // DAY), "day")
                first_billing = datetime.fromtimestamp(sub.trial_end, tz=UTC).date()
            charges = [
                ("settled", f"{inv.amount_paid / 100:.2f}", datetime.fromtimestamp(inv.paid_at, tz=UTC))
                for inv in p.invoices
                if inv.subscription == sub.id and inv.amount_paid > 0
            ]
            status = {
                "trialing": "Active",
                "active": "Active",
                "canceled": "Canceled",
                "past_due": "Past Due",
            }
            added = self.add_subscription(
                customer_id,
                sub.id,
                created=datetime.fromtimestamp(sub.created, tz=UTC),
                first_billing=first_billing,
                status=status[sub.status],
                trial=trial,
                charges=charges,
                price=f"{sub.amount / 100:.2f}",
            )
            if sub.canceled_at:
                added["status_history"] = [
                    {"status": "Canceled", "timestamp": ts(datetime.fromtimestamp(sub.canceled_at, tz=UTC))}
                ]

    # -- data -------------------------------------------------------------------------------------

    def add_customer(
        self,
        n: int,
        created: datetime,
        *,
        tokens: int = 1,
        cid: str | None = None,
        person: FakePerson | None = None,
    ) -> str:
        cid = cid or f"bt_cust_{n:05d}"
        self.customers.append(
            {
                "id": cid,
                "first_name": person.first_name if person else "Grace",
                "last_name": person.last_name if person else f"Hopper{n}",
                "email": person.email if person else f"grace{n}@example.org",
                "company": f"Navy {n}" if n % 2 else None,
                "website": "https://navy.example.org" if n % 2 else None,
                "phone": None,
                "created_at": ts(created),
                "updated_at": ts(created),
                "custom_fields": "",
                "credit_cards": [
                    {"token": f"tok_{cid}_{k}", "card_type": "Visa", "last_4": "1111", "customer_id": cid}
                    for k in range(tokens)
                ],
                "paypal_accounts": [],
            }
        )
        for k in range(tokens):
            self.token_owner[f"tok_{cid}_{k}"] = cid
        return cid

    def add_subscription(
        self,
        customer_id: str,
        sid: str,
        *,
        created: datetime,
        first_billing: date,
        status: str = "Active",
        trial: tuple[int, str] | None = None,
        charges: Sequence[tuple[str, str, datetime]] = (),  # (status, amount, created)
        price: str = "29.00",
    ) -> dict[str, Any]:
        customer = next(c for c in reversed(self.customers) if c["id"] == customer_id)
        token = customer["credit_cards"][0]["token"]
        transactions = []
        for k, (status_, amount, when) in enumerate(charges):
            txn = {
                "id": f"txn_{sid}_{k}",
                "status": status_,
                "type": "sale",
                "amount": amount,
                "currency_iso_code": "USD",
                "created_at": ts(when),
                "subscription_id": sid,
                "customer": {"id": customer_id, "email": None},
            }
            transactions.append(txn)
            self.transactions.append(txn)
        subscription = {
            "id": sid,
            "status": status,
            "plan_id": "monthly",
            "price": price,
            "payment_method_token": token,
            "trial_period": trial is not None,
            "trial_duration": trial[0] if trial else None,
            "trial_duration_unit": trial[1] if trial else None,
            "created_at": ts(created),
            "updated_at": ts(created),
            "first_billing_date": first_billing.isoformat(),
            "billing_period_start_date": first_billing.isoformat(),
            "next_billing_date": (first_billing + timedelta(days=30)).isoformat(),
            "current_billing_cycle": len([c for c in charges if c[0] != "processor_declined"]),
            "transactions": transactions,
            "add_ons": [],
            "discounts": [],
            "status_history": [],
        }
        self.subscriptions.append(subscription)
        customer["credit_cards"][0].setdefault("subscriptions", []).append(subscription)
        return subscription

    def change_status(self, sid: str, status: str, at: datetime) -> None:
        """A subscription's status moves with no new transaction (a cancellation, an expiry, a failed
        renewal turning Past Due): ``status``, ``status_history`` and ``updated_at`` change, nothing else."""
        subscription = self._index("subscriptions", self.subscriptions)[sid]
        subscription["status"] = status
        subscription["updated_at"] = ts(at)
        subscription["status_history"] = [{"status": status, "timestamp": ts(at)}, *subscription["status_history"]]

    # -- GraphQL ----------------------------------------------------------------------------------

    def authorised(self, request: httpx.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{PUBLIC}:{PRIVATE}".encode()).decode()
        return request.headers.get("Authorization") == expected

    def _index(self, resource: str, items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        cache = self.__dict__.setdefault("_by_id", {})
        if cache.get(resource, (None, -1))[1] != len(items):
            cache[resource] = ({i["id"]: i for i in items}, len(items))
        return cache[resource][0]

    def _transactions_of(self, customer_id: str) -> list[dict[str, Any]]:
        # Indexed once per change of the transaction list, so paging 200,000 customers stays linear.
        if getattr(self, "_txn_index_size", -1) != len(self.transactions):
            self._txn_index: dict[str, list[dict[str, Any]]] = {}
            for t in self.transactions:
                self._txn_index.setdefault(t["customer"]["id"], []).append(t)
            self._txn_index_size = len(self.transactions)
        return self._txn_index.get(customer_id, [])

    def _node(self, customer: dict[str, Any]) -> dict[str, Any]:
        has_txn = bool(self._transactions_of(customer["id"]))
        return {
            "id": base64.b64encode(f"customer_{customer['id']}".encode()).decode(),
            "legacyId": customer["id"],
            "email": customer["email"],
            "firstName": customer["first_name"],
            "lastName": customer["last_name"],
            "company": customer["company"],
            "website": customer["website"],
            "createdAt": customer["created_at"].replace("Z", ".000000Z"),
            "paymentMethods": {
                "edges": [{"node": {"legacyId": card["token"]}} for card in customer["credit_cards"]]
            },
            "transactions": {"edges": [{"node": {"id": "dHJhbnNhY3Rpb25fMQ"}}] if has_txn else []},
        }

    def graphql_handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("Braintree-Version") is None:
            return httpx.Response(400, json={"errors": [{"message": "Braintree-Version header is required"}]})
        payload = json.loads(request.content)
        assert "search" in payload["query"] and "customers" in payload["query"]
        variables = payload["variables"]
        since = ((variables["input"].get("createdAt") or {}).get("greaterThanOrEqualTo")) or ""
        ids = {i for i in ((variables["input"].get("id") or {}).get("in") or [])}
        key = (len(self.customers), since, tuple(sorted(ids)))
        if getattr(self, "_search_key", None) != key:  # the same search pages many times: sort it once
            self._search_key = key
            self._search_items = sorted(
                (c for c in self.customers if c["created_at"] >= since[:19] and (not ids or c["id"] in ids)),
                key=lambda c: (c["created_at"], c["id"]),
            )
        items = self._search_items
        first = int(variables["first"])
        after = None if self.loop_path == "/graphql" else variables.get("after")
        start = int(base64.b64decode(after).decode().split(":")[1]) if after else 0
        chunk = items[start : start + first]
        end = start + len(chunk)
        end_cursor = base64.b64encode(f"cursor:{end}".encode()).decode()
        return httpx.Response(
            200,
            json={
                "data": {
                    "search": {
                        "customers": {
                            "pageInfo": {"hasNextPage": end < len(items), "endCursor": end_cursor},
                            "edges": [
                                {
                                    "cursor": base64.b64encode(f"cursor:{start + k + 1}".encode()).decode(),
                                    "node": self._node(c),
                                }
                                for k, c in enumerate(chunk)
                            ],
                        }
                    }
                },
                "extensions": {"requestId": "req-2"},
            },
        )

    # -- XML gateway ------------------------------------------------------------------------------

    def unauthorised(self) -> httpx.Response:
        # Both APIs answer bad keys with HTTP 401 (GraphQL adds an AUTHENTICATION error in the body).
        return httpx.Response(
            401,
            json={
                "errors": [
                    {
                        "message": "Authentication credentials are invalid",
                        "extensions": {"errorClass": "AUTHENTICATION"},
                    }
                ]
            },
        )

    def gateway_handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.headers.get("X-ApiVersion") != "6":
            return httpx.Response(400, content=b"<api-error-response/>")
        prefix = f"/merchants/{MERCHANT}"
        assert path.startswith(prefix), path
        path = path[len(prefix) :]
        if request.method == "POST":
            criteria = ET.fromstring(request.content)
            resource = path.split("/")[1]
            items = self.subscriptions if resource == "subscriptions" else self.transactions
            if path.endswith("/advanced_search_ids"):
                since = criteria.findtext("created-at/min") or ""
                # ``status`` is a multiple-value criterion (``<status type="array"><item>Active</item>``).
                statuses = {(e.text or "") for e in criteria.find("status") or []} or None
                ids = [
                    i["id"] for i in sorted(items, key=lambda i: i["created_at"])
                    if i["created_at"] >= since and (statuses is None or i.get("status") in statuses)
                ]
                root = ET.Element("search-results")
                root.append(to_xml("page_size", self.xml_page_size))
                root.append(to_xml("ids", ids))
                return xml_response(root)
            if path.endswith("/advanced_search"):
                wanted = [(e.text or "") for e in criteria.find("ids") or []]
                assert 0 < len(wanted) <= self.xml_page_size, "a batch larger than page_size"
                tag = "subscriptions" if resource == "subscriptions" else "credit-card-transactions"
                root = ET.Element(tag, {"type": "collection"})
                root.append(to_xml("current_page_number", 1))
                root.append(to_xml("page_size", self.xml_page_size))
                root.append(to_xml("total_items", len(wanted)))
                by_id = self._index(resource, items)
                for item in (by_id[w] for w in wanted if w in by_id):
                    root.append(
                        to_xml("subscription" if resource == "subscriptions" else "transaction", item)
                    )
                return xml_response(root)
        match = re.fullmatch(r"/customers/([^/]+)", path)
        if match:
            customer = next((c for c in self.customers if c["id"] == match.group(1)), None)
            return xml_response(to_xml("customer", customer)) if customer else httpx.Response(404)
        match = re.fullmatch(r"/subscriptions/([^/]+)", path)
        if match:  # ``Subscription.find``: GET /subscriptions/{id}
            subscription = self._index("subscriptions", self.subscriptions).get(match.group(1))
            return xml_response(to_xml("subscription", subscription)) if subscription else httpx.Response(404)
        match = re.fullmatch(r"/payment_methods/any/([^/]+)", path)
        if match and match.group(1) in self.token_owner:
            return xml_response(
                to_xml(
                    "credit_card", {"token": match.group(1), "customer_id": self.token_owner[match.group(1)]}
                )
            )
        return httpx.Response(404)

    def routes(self) -> list[tuple[str, str, Any]]:
        """Both APIs on one host, for ``fakes.server.serve``."""
        return [
            ("POST", r"/graphql", self.graphql_handler),
            ("POST", r"/merchants/.+", self.gateway_handler),
            ("GET", r"/merchants/.+", self.gateway_handler),
        ]

    def install(self, router: Any) -> None:
        router.post(GRAPHQL).mock(side_effect=self._wrap(self.graphql_handler))
        router.route(url__startswith=f"{GATEWAY}/merchants/").mock(
            side_effect=self._wrap(self.gateway_handler)
        )


def populated(n: int = 12) -> BraintreeFake:
    """``n`` customers a day apart; every third is a lead with no subscription, the others have a
    14-day trial subscription (the even ones also charged once)."""
    fake = BraintreeFake(n=0)
    start = datetime(2025, 3, 1, 17, tzinfo=UTC)
    for i in range(n):
        created = start + timedelta(days=i)
        cid = fake.add_customer(i, created)
        if i % 3 == 2:
            continue
        first_billing = (created + timedelta(days=14)).date()
        charges = [("settled", "29.00", created + timedelta(days=14, hours=3))] if i % 2 == 0 else []
        fake.add_subscription(
            cid,
            f"sub_{i:05d}",
            created=created,
            first_billing=first_billing,
            trial=(14, "day"),
            charges=charges,
        )
    return fake
