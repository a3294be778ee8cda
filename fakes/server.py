"""Serve a fake API on 127.0.0.1 (a thread), for tests that run the CLI in a real process."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx

from fakes.base import FakeApi


@contextmanager
def serve(fake: FakeApi) -> Iterator[str]:
    """Run ``fake`` on a local port; yields its base URL (also set as ``fake.base_url``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    suffix = urlsplit(fake.base_url).path.rstrip("/")
    fake.base_url = f"http://127.0.0.1:{server.server_address[1]}{suffix}"
    routes = [(m, re.compile(rf"^{re.escape(fake.base_url)}{p}(\?.*)?$"), fake._wrap(h)) for m, p, h in fake.routes()]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, verb: str) -> None:
            url = f"http://127.0.0.1:{server.server_address[1]}{self.path}"
            length = int(self.headers.get("Content-Length") or 0)
            content = self.rfile.read(length) if length else b""
            request = httpx.Request(verb, url, headers=dict(self.headers.items()), content=content)
            for method, pattern, handler in routes:
                if method == verb and pattern.match(url):
                    response = handler(request)
                    break
            else:
                response = httpx.Response(404, json={"error": {"message": f"no route {self.path}"}})
            body = response.content
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Keep request logs out of the test output."""

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake.base_url
    finally:
        server.shutdown()
        server.server_close()
