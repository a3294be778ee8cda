"""A fake of what the Google Play connector pulls: the developer's reports bucket on the Cloud Storage JSON
API, with Google's OAuth token endpoint for its service account, served on 127.0.0.1 (the connector speaks
through ``google-cloud-storage``, over ``requests``, which ``install`` points here with
``STORAGE_EMULATOR_HOST``).

- ``POST /token``: the service account's JWT bearer grant (``grant_type=urn:ietf:params:oauth:grant-type:
  jwt-bearer``, an RS256 ``assertion`` whose ``aud`` is Google's token endpoint), as google-auth's
  ``service_account.py`` sends it; an
  assertion not signed by the account's key answers Google's ``400 invalid_grant`` "Invalid JWT Signature.".
- ``GET /storage/v1/b/BUCKET/o?prefix=&pageToken=``: the object list, two a page with ``nextPageToken``;
  ``GET /download/storage/v1/b/BUCKET/o/NAME?alt=media&generation=``: the object, with ``X-Goog-Hash``.
  Both want the bearer token the endpoint issued (else Cloud Storage's 401 "Invalid Credentials").

Its people are subscriptions in three monthly ``sales/salesreport_YYYYMM.zip`` reports, months that ended
long ago (so final once read): sign-ups charged in their month, and every fifth one a subscription that
began with a 7-day free trial, seen first as its ``..0`` charge with the trial offer's ``Offer ID``; a
subscription of the first two months renews in the next month's report (``..1``), under the same order.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import google_crc32c
import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from fakes.base import FakeApi

if TYPE_CHECKING:
    import respx

    from fakes.server import FakeServer

BUCKET = "pubsite_prod_rev_01234567890987654321"
HEADER = (
    "Order Number,Order Charged Date,Order Charged Timestamp,Financial Status,Device Model,Product Title,"
    "Package ID,Product Type,SKU ID,Currency of Sale,Item Price,Taxes Collected,Charged Amount,Country of Buyer,"
    "City of Buyer,State of Buyer,Postal Code of Buyer,Base Plan or Purchase Option ID,Offer ID"
)
# google-auth's grant assertion names Google's token endpoint as its audience, wherever token_uri points.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ISSUED_TOKEN = "ya29.fake-access-token"
LIST_PAGE = 2


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def sale_row(order: str, moment: datetime, amount: str, country: str, offer: str = "") -> str:
    """One row of the estimated sales report, with the columns Google documents (2024 header)."""
    return (f"{order},{moment.date().isoformat()},{int(moment.timestamp())},Charged,sailfish,Pro (Acme App),"
            f"com.acme.app,subscription,pro_monthly,USD,{amount},0.00,{amount},{country},Austin,TX,78701,"
            f"monthly-autorenew,{offer}")


def report_zip(month: str, rows: list[str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"salesreport_{month}.csv", "\n".join([HEADER, *rows]) + "\n")
    return buffer.getvalue()


class GooglePlayBucketFake(FakeApi):
    kind = "google_play"
    base_url = "http://127.0.0.1"
    main_path = f"/storage/v1/b/{BUCKET}/o"
    main_stream = "sales_reports"
    # The service account's key id plays the part of the key the suite swaps for a wrong one.
    api_key = "5f8c0f1ba6d0e2c1fakekeyid"
    # What the suite finds in the error of a refused key: Google's token endpoint refuses it (400).
    refused = "invalid_grant"

    def __init__(self, n: int = 25, page_size: int = 10) -> None:
        super().__init__(n, page_size)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.server: FakeServer | None = None
        self._saved_host: str | None = None
        first = date.today().replace(day=1) - timedelta(days=100)
        months = [(first + timedelta(days=31 * k)).replace(day=1) for k in range(3)]
        rows: dict[str, list[str]] = {m.strftime("%Y%m"): [] for m in months}
        self.orders: dict[str, str] = {}
        for i, person in enumerate(self.people):
            index = min(i // page_size, 2)
            month = months[index]
            moment = datetime(month.year, month.month, 1 + (i % page_size) * 2, 12, tzinfo=UTC)
            order = f"GPA.3312-{i:04d}-7788-{i:05d}"
            self.orders[person.id] = order
            if i % 5 == 2:  # a 7-day free trial: no sign-up row, its first charge a week later
                rows[month.strftime("%Y%m")].append(
                    sale_row(f"{order}..0", moment + timedelta(days=7), "9.99", person.country, "freetrial-7d"))
            else:
                rows[month.strftime("%Y%m")].append(sale_row(order, moment, "9.99", person.country))
            if i % 5 == 3 and index < 2:  # renews in the next month's report
                later = months[index + 1]
                rows[later.strftime("%Y%m")].append(
                    sale_row(f"{order}..1", datetime(later.year, later.month, 25, 12, tzinfo=UTC), "9.99",
                             person.country))
        self.objects: dict[str, tuple[bytes, int]] = {}
        for number, (month, month_rows) in enumerate(sorted(rows.items()), start=1):
            self.objects[f"sales/salesreport_{month}.zip"] = (report_zip(month, month_rows), 1_700_000_000_000 + number)
        self.objects["sales/earnings_placeholder.csv"] = (b"not a sales report", 1_700_000_000_100)

    def id_prefix(self) -> str:
        return "gp_"

    def expected_ids(self) -> set[str]:
        return set(self.orders.values())

    def service_account(self, key_id: str | None = None) -> str:
        """The service account's JSON key (the ``service_account`` setting); another key id: another key."""
        key = self.key if key_id in (None, self.api_key) else rsa.generate_private_key(65537, 2048)
        return json.dumps({
            "type": "service_account", "project_id": "acme-play-reports", "private_key_id": key_id or self.api_key,
            "private_key": _pem(key), "client_email": "reports@acme-play-reports.iam.gserviceaccount.com",
            "client_id": "104650327710987654321", "token_uri": f"{self.base_url}/token",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        })

    def settings(self, api_key: str | None = None) -> dict[str, Any]:
        return {"bucket": BUCKET, "service_account": self.service_account(api_key)}

    # ------------------------------------------------------------------ serving

    def install(self, router: respx.Router | None = None) -> None:
        """Serve on a local port and point google-cloud-storage at it (``STORAGE_EMULATOR_HOST``)."""
        from fakes.server import FakeServer

        self.server = FakeServer(self).start()
        self._saved_host = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = self.base_url

    @contextmanager
    def served(self) -> Iterator[str]:
        self.install()
        try:
            yield self.base_url
        finally:
            self.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._saved_host is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = self._saved_host

    def routes(self) -> list[tuple[str, str, Callable[[httpx.Request], httpx.Response]]]:
        return [
            ("POST", "/token", self.token),
            ("GET", "/storage/v1/b/[^/?]+/o", self.list_objects),
            ("GET", "/download/storage/v1/b/[^/?]+/o/[^?]+", self.download),
        ]

    def authorised(self, request: httpx.Request) -> bool:
        if request.url.path == "/token":
            return True
        return request.headers.get("Authorization") == f"Bearer {ISSUED_TOKEN}"

    def unauthorised(self) -> httpx.Response:
        return httpx.Response(401, json={"error": {"code": 401, "message": "Invalid Credentials", "errors": [
            {"message": "Invalid Credentials", "domain": "global", "reason": "authError",
             "locationType": "header", "location": "Authorization"}]}})

    def token(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if form.get("grant_type") != JWT_BEARER or "assertion" not in form:
            return httpx.Response(400, json={"error": "unsupported_grant_type",
                                             "error_description": "Invalid grant_type"})
        header, claims, signature = form["assertion"].split(".")
        try:
            self.key.public_key().verify(_unb64(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(),
                                         hashes.SHA256())
        except InvalidSignature:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        if json.loads(_unb64(claims)).get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return httpx.Response(400, json={"error": "invalid_grant", "error_description": "Invalid JWT: audience"})
        return httpx.Response(200, json={"access_token": ISSUED_TOKEN, "expires_in": 3599, "token_type": "Bearer"})

    def _bucket_of(self, request: httpx.Request) -> str:
        return unquote(request.url.raw_path.decode().split("?")[0].split("/b/", 1)[1].split("/", 1)[0])

    def resource(self, name: str) -> dict[str, Any]:
        data, generation = self.objects[name]
        return {
            "kind": "storage#object", "id": f"{BUCKET}/{name}/{generation}", "name": name, "bucket": BUCKET,
            "generation": str(generation), "metageneration": "1", "contentType": "application/zip",
            "size": str(len(data)),
            "md5Hash": base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode(),
            "crc32c": base64.b64encode(google_crc32c.Checksum(data).digest()).decode(),
            "storageClass": "STANDARD", "updated": "2026-01-01T00:00:00.000Z",
        }

    def list_objects(self, request: httpx.Request) -> httpx.Response:
        if self._bucket_of(request) != BUCKET:
            return httpx.Response(404, json={"error": {"code": 404, "message": "The specified bucket does not exist."}})
        prefix = request.url.params.get("prefix", "")
        names = sorted(n for n in self.objects if n.startswith(prefix))
        token = request.url.params.get("pageToken")
        start = 0 if (token is None or self.loop_path == request.url.path) else int(token)
        body: dict[str, Any] = {"kind": "storage#objects",
                                "items": [self.resource(n) for n in names[start:start + LIST_PAGE]]}
        if start + LIST_PAGE < len(names):
            body["nextPageToken"] = str(start + LIST_PAGE)
        return httpx.Response(200, json=body)

    def download(self, request: httpx.Request) -> httpx.Response:
        name = unquote(request.url.raw_path.decode().split("?")[0].split("/o/", 1)[1])
        found = self.objects.get(name) if self._bucket_of(request) == BUCKET else None
        generation = request.url.params.get("generation")
        if found is None or (generation and int(generation) != found[1]):
            return httpx.Response(404, json={"error": {"code": 404, "message": "No such object."}})
        resource = self.resource(name)
        return httpx.Response(200, content=found[0], headers={
            "Content-Type": "application/zip", "X-Goog-Generation": str(found[1]),
            "X-Goog-Hash": f"crc32c={resource['crc32c']},md5={resource['md5Hash']}"})
