"""Helpers for connection URLs: above all, never show a password."""

from __future__ import annotations

import os
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


def sqlite_file(url: str) -> str:
    """The file a `sqlite:///relative.db` or `sqlite:////abs/path.db` URL names ('' if none)."""
    path = urlsplit(url).path
    return path[1:] if path.startswith("/") else path


def shown(url: str) -> str:
    """`url` as a worker shows where it works: password masked, and a SQLite file's path
    made absolute (`sqlite:///soloist.db` is relative to the directory it started in)."""
    if url.startswith("sqlite:") and sqlite_file(url):
        query = urlsplit(url).query
        return f"sqlite:///{os.path.abspath(sqlite_file(url))}" + (f"?{query}" if query else "")
    return redact(url)
