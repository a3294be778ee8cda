"""A local webhook receiver (the user's endpoint of a ``webhook`` or ``slack`` action) on 127.0.0.1.

It checks every delivery's signature the way docs/automations.md tells a receiver to, records what it
received, and answers from a plan (``[500, 500]`` then ``default``), so tests and the bench see what a
real endpoint sees. Stdlib only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: unsigned (a Slack message), or no secret to check against
    at: float = field(default_factory=time.monotonic)  # when it came in (the gaps between retries)

    def json(self) -> Any:
        return json.loads(self.body)


def signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check: HMAC-SHA256 of "<timestamp>.<raw body>", compared in constant time."""
    timestamp = headers.get("x-funnelsync-timestamp", "")
    expected = "v1=" + hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get("x-funnelsync-signature", ""))


@dataclass
class HookReceiver:
    """Start with ``start()``; ``url`` is where it listens; ``received`` what came in."""

    secret: str | None = None
    plan: list[int] = field(default_factory=list)
    default: int = 200
    on_request: Callable[[Received], None] | None = None
    record: bool = True
    received: list[Received] = field(default_factory=list)
    count: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def start(self) -> HookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                # A Slack message carries no signature (Slack's incoming webhooks take none).
                signed = receiver.secret is not None and "x-funnelsync-signature" in headers
                ok = signature_ok(receiver.secret or "", headers, body) if signed else None
                item = Received(self.path, headers, body, ok)
                with receiver._lock:
                    receiver.count += 1
                    if receiver.record:
                        receiver.received.append(item)
                    status = receiver.plan.pop(0) if receiver.plan else receiver.default
                if receiver.on_request is not None:
                    receiver.on_request(item)
                if ok is False:
                    status = 401
                answer = b"ok" if status < 300 else b"nope"
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
