"""A local stand-in for the Cloud Storage JSON API, enough for ``google-cloud-storage`` pointed at it with
``STORAGE_EMULATOR_HOST``: list objects (``GET /storage/v1/b/BUCKET/o?prefix=&pageToken=&maxResults=``,
paged with ``nextPageToken``) and download one (``GET /download/storage/v1/b/BUCKET/o/NAME?alt=media``,
with ``generation``), with the object resource fields the API documents (``generation``, ``md5Hash``,
``crc32c``, ``size``, ``updated``) and the ``X-Goog-Hash`` header the client checks downloads against.

Not a pulled kind's fake (``fakes.base.FakeApi``): a real HTTP server on 127.0.0.1, since the client
speaks through ``requests``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import google_crc32c


@dataclass
class StoredObject:
    data: bytes
    generation: int
    updated: datetime


@dataclass
class FakeCloudStorage:
    """Buckets of objects; ``put`` a new version (a new generation) as Google does when it rewrites a report."""

    buckets: dict[str, dict[str, StoredObject]] = field(default_factory=dict)
    page_size: int = 2
    requests: list[str] = field(default_factory=list)
    _generation: int = 1_700_000_000_000_000

    def put(self, bucket: str, name: str, data: bytes, updated: datetime | None = None) -> None:
        self._generation += 1
        self.buckets.setdefault(bucket, {})[name] = StoredObject(data, self._generation, updated or datetime.now(UTC))

    def resource(self, bucket: str, name: str) -> dict[str, Any]:
        obj = self.buckets[bucket][name]
        return {
            "kind": "storage#object", "id": f"{bucket}/{name}/{obj.generation}", "name": name, "bucket": bucket,
            "generation": str(obj.generation), "metageneration": "1", "contentType": "application/zip",
            "size": str(len(obj.data)),
            "md5Hash": base64.b64encode(hashlib.md5(obj.data, usedforsecurity=False).digest()).decode(),
            "crc32c": base64.b64encode(google_crc32c.Checksum(obj.data).digest()).decode(),
            "storageClass": "STANDARD", "timeCreated": obj.updated.isoformat().replace("+00:00", "Z"),
            "updated": obj.updated.isoformat().replace("+00:00", "Z"),
        }


def _handler(fake: FakeCloudStorage) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _missing(self) -> None:
            self._json(404, {"error": {"code": 404, "message": "No such object.", "errors": [
                {"message": "No such object.", "domain": "global", "reason": "notFound"}]}})

        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            fake.requests.append(self.path)
            parts = url.path.split("/")
            # /storage/v1/b/BUCKET/o  or  /download/storage/v1/b/BUCKET/o/NAME
            if parts[1:3] == ["storage", "v1"] and len(parts) == 6 and parts[3] == "b" and parts[5] == "o":
                bucket = unquote(parts[4])
                if bucket not in fake.buckets:
                    return self._json(404, {"error": {"code": 404, "message": "The specified bucket does not exist."}})
                names = sorted(n for n in fake.buckets[bucket] if n.startswith(query.get("prefix", "")))
                start = int(query.get("pageToken") or 0)
                size = min(int(query.get("maxResults") or fake.page_size), fake.page_size)
                body: dict[str, Any] = {"kind": "storage#objects",
                                        "items": [fake.resource(bucket, n) for n in names[start:start + size]]}
                if start + size < len(names):
                    body["nextPageToken"] = str(start + size)
                return self._json(200, body)
            if parts[1:4] == ["download", "storage", "v1"] and len(parts) == 8 and parts[6] == "o":
                bucket, name = unquote(parts[5]), unquote(parts[7])
                obj = fake.buckets.get(bucket, {}).get(name)
                if obj is None or ("generation" in query and int(query["generation"]) != obj.generation):
                    return self._missing()
                resource = fake.resource(bucket, name)
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(obj.data)))
                self.send_header("X-Goog-Generation", str(obj.generation))
                self.send_header("X-Goog-Hash", f"crc32c={resource['crc32c']},md5={resource['md5Hash']}")
                self.end_headers()
                self.wfile.write(obj.data)
                return None
            return self._json(404, {"error": {"code": 404, "message": f"Not Found: {url.path}"}})

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return

    return Handler


@contextmanager
def serve(fake: FakeCloudStorage) -> Iterator[str]:
    """Serve ``fake`` on 127.0.0.1; yields its ``http://host:port`` (the value for ``STORAGE_EMULATOR_HOST``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
