"""A stand-in for Google's token signing: an RSA key whose certificate is served, as Google serves
``https://www.googleapis.com/oauth2/v1/certs`` (``{"<kid>": "<PEM certificate>"}``), from a loopback HTTP
server, and OIDC tokens minted with it the way a Pub/Sub push subscription's are (RS256; ``iss``
``https://accounts.google.com``, ``aud`` the configured audience, ``email`` the push service account,
``email_verified``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

PUSH_ACCOUNT = "rtdn-push@my-project.iam.gserviceaccount.com"


class GoogleSigner:
    """One signing key and its certificate."""

    def __init__(self, kid: str = "f2e11986282de93f27b264fd2a4de192993dcb8c") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, kid)])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=2)).sign(self.key, hashes.SHA256())
        )

    def certs(self) -> dict[str, str]:
        return {self.kid: self.cert.public_bytes(serialization.Encoding.PEM).decode()}

    def token(self, audience: str, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": audience, "azp": "113774264463038321964", "email": PUSH_ACCOUNT, "email_verified": True,
            "exp": now + 3600, "iat": now, "iss": "https://accounts.google.com", "sub": "113774264463038321964",
        }
        claims.update(overrides)
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})


@contextmanager
def serve_certs(signer: GoogleSigner) -> Iterator[str]:
    """Serve ``signer``'s certificate on 127.0.0.1; yields the certs URL."""
    body = json.dumps(signer.certs()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/oauth2/v1/certs"
    finally:
        server.shutdown()
        server.server_close()
