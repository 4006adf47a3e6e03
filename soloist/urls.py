"""Helpers for connection URLs: above all, never show a password."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit


def redact(url: str) -> str:
    """`url` with any password replaced by `***`, safe for logs and errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def passwords(url: str | None) -> set[str]:
    """The password in `url` as written and URL-decoded: what must never be shown."""
    try:
        password = urlsplit(url or "").password
    except ValueError:
        return set()
    return {password, unquote(password)} - {""} if password else set()


def scrub(text: str, hidden: Iterable[str]) -> str:
    """`text` (an error from a client library, a log line) with each of `hidden` masked."""
    for secret in hidden:
        text = text.replace(secret, "***")
    return text
