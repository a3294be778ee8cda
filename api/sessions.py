"""Browser sessions for the dashboard: an API key typed once into the sign-in page, kept server-side.

The browser holds only a random session id in an HttpOnly, SameSite=Strict cookie (no script can read
it, no other site's page can send it) and a CSRF token in a second, readable cookie that the page's
script echoes in ``X-CSRF-Token`` on every write: a write with the session cookie but without the
matching header is refused. The key itself stays in this process's memory and is checked again on every
request (by ``funnelsync serve`` once every ``--key-cache-seconds``, 5 by default), so revoking it
(``funnelsync api-keys revoke``) ends its sessions at once, or within that window. HTTP Basic keeps
working for scripts, untouched by any of this.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass

SESSION_COOKIE = "fs_session"
CSRF_COOKIE = "fs_csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Session:
    """One signed-in browser."""

    key: str
    csrf: str
    expires: float


class SessionStore:
    """The sessions of this server process (a restart signs everyone out)."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def open(self, key: str) -> tuple[str, Session]:
        """A new session for ``key``: its id (the cookie value) and the session."""
        now = time.time()
        self._sessions = {sid: s for sid, s in self._sessions.items() if s.expires > now}
        sid = secrets.token_urlsafe(32)
        session = Session(key, secrets.token_urlsafe(24), now + SESSION_SECONDS)
        self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        """The live session of cookie value ``sid``, if any."""
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None or session.expires <= time.time():
            self._sessions.pop(sid, None)
            return None
        return session

    def close(self, sid: str | None) -> None:
        """Forget a session (sign-out)."""
        if sid:
            self._sessions.pop(sid, None)


def csrf_ok(session: Session, header: str | None) -> bool:
    """Whether a write carries the session's CSRF token (compared in constant time)."""
    return bool(header) and hmac.compare_digest(session.csrf, header or "")
