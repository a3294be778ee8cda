"""Serve fake APIs over real HTTP on 127.0.0.1 (a thread): for a CLI in another process, the demo, the benches.

Several fakes share one port, each under the path of its base URL (Stripe's ``/v1/…`` beside
Chargebee's ``/api/v2/…``); every request goes through the fake's own handlers, credentials and
injected failures, exactly as on a respx router.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import urlsplit

import httpx

from fakes.base import FakeApi

Route = tuple[str, re.Pattern[str], Callable[[httpx.Request], httpx.Response]]


class FakeServer:
    """``fakes`` served on one local port; each fake's ``base_url`` is moved there when it is built.

    Attributes:
        delay_seconds: how long each answer waits, standing in for a vendor's latency (tests keep a sync
            busy with it).
        requests: ``(method, path)`` of every request, in order.
        arrivals: the ``time.monotonic()`` each request arrived at, in order.
        most_in_flight: the most requests answered at once (a client's concurrency, seen from here).
    """

    def __init__(self, *fakes: FakeApi, host: str = "127.0.0.1", port: int = 0) -> None:
        self.delay_seconds = 0.0
        self.requests: list[tuple[str, str]] = []
        self.arrivals: list[float] = []
        self.most_in_flight = 0
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._routes: list[Route] = []
        for fake in fakes:
            suffix = urlsplit(fake.base_url).path.rstrip("/")
            fake.base_url = f"{self.url}{suffix}"
            self._routes += [(m, re.compile(rf"^{re.escape(fake.base_url)}{p}(\?.*)?$"), fake._wrap(h))
                             for m, p, h in fake.routes()]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        host, port = self._server.server_address[:2]
        return f"http://{host if isinstance(host, str) else host.decode()}:{port}"

    def start(self) -> Self:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-apis", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def answer(self, method: str, url: str, headers: dict[str, str], content: bytes) -> httpx.Response:
        """The answer of the fake that owns ``url`` (404 when none does)."""
        with self._lock:
            self.arrivals.append(time.monotonic())
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
        try:
            if self.delay_seconds:
                time.sleep(self.delay_seconds)
            with self._lock:
                self.requests.append((method, urlsplit(url).path))
            request = httpx.Request(method, url, headers=headers, content=content)
            for verb, pattern, handler in self._routes:
                if verb == method and pattern.match(url):
                    return handler(request)
            return httpx.Response(404, json={"error": {"message": f"no route {urlsplit(url).path}"}})
        finally:
            with self._lock:
                self._in_flight -= 1

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: connectors reuse their connections

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def _serve(self, verb: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                content = self.rfile.read(length) if length else b""
                response = outer.answer(verb, f"{outer.url}{self.path}", dict(self.headers.items()), content)
                body = response.content
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                """Keep request logs out of the output."""

        return Handler


@contextmanager
def serve(fake: FakeApi, *others: FakeApi) -> Iterator[str]:
    """Run ``fake`` (and ``others``) on a local port; yields its base URL (also set as ``fake.base_url``)."""
    with FakeServer(fake, *others):
        yield fake.base_url
