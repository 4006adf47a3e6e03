"""Who may read the dashboard and who may act: the token, the session cookie, CSRF.

Without a token the dashboard serves anyone who reaches it, so the command binds it to
loopback only (and the server accepts only loopback Host headers: a page on another site
cannot reach it through DNS rebinding). With a token, every page and API call needs either
`Authorization: Bearer <token>` (scripts) or the session cookie that logging in with the
token sets (browsers: HttpOnly, SameSite=Strict).

Actions are POSTs. A browser's must carry the CSRF token in a header (a page of another
origin cannot read it, nor send a custom header without a CORS preflight, which is never
granted) and, when the browser sends one, an Origin equal to the dashboard's own. A Bearer
call needs no CSRF token: browsers never add that header by themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

from starlette.requests import Request

COOKIE = "soloist_dashboard"
CSRF_HEADER = "x-soloist-csrf"
#: Host names a dashboard without a token answers to.
LOOPBACK_NAMES = ["127.0.0.1", "localhost", "::1", "[::1]"]
#: Shortest token accepted: guessing must stay out of reach.
MIN_TOKEN = 16


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """The checks, with a secret of this process's own: restarting logs everyone out."""

    def __init__(self, token: str | None, read_only: bool = False) -> None:
        self.token = token or None
        self.read_only = read_only
        self._secret = secrets.token_bytes(32)

    def _mac(self, purpose: str, value: str = "") -> str:
        return hmac.new(self._secret, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()

    def check_token(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def session(self) -> str:
        """The cookie value a correct login gets."""
        return self._mac("session")

    def bearer(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.check_token(given.strip())

    def allowed(self, request: Request) -> bool:
        """May this request read? Always without a token."""
        if self.token is None or self.bearer(request):
            return True
        return hmac.compare_digest(request.cookies.get(COOKIE, ""), self.session())

    def csrf(self, request: Request) -> str:
        """The CSRF token of this request's session (the page reads it from /api/session)."""
        return self._mac("csrf", request.cookies.get(COOKIE, ""))

    def refuse_action(self, request: Request) -> tuple[int, str] | None:
        """Why this POST may not act (status, reason), or None when it may."""
        if self.read_only:
            return 403, "the dashboard is read-only"
        if not self.allowed(request):
            return 401, "log in first (or send Authorization: Bearer <token>)"
        if self.bearer(request):
            return None
        if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), self.csrf(request)):
            return 403, f"missing or wrong {CSRF_HEADER} header"
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            return 403, "cross-origin request refused"
        return None
