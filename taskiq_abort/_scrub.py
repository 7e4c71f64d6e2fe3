"""Keeping Redis passwords out of what we print: logs, error messages, HTTP answers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit


def passwords(url: object) -> set[str]:
    """The password of ``url`` (a set: empty without one, or for what is not a URL)."""
    if isinstance(url, str):
        with contextlib.suppress(ValueError):
            password = urlsplit(url).password
            if password:
                return {password}
    return set()


def scrub(message: str, secrets: Iterable[str]) -> str:
    """``message`` with each of ``secrets`` replaced by ``***``."""
    for secret in secrets:
        message = message.replace(secret, "***")
    return message


def safe_url(url: str) -> str:
    """``url`` with any password masked.

    >>> safe_url("redis://user:s3cret@db:6379/0")
    'redis://user:***@db:6379/0'
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
