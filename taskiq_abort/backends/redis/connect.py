"""Connections to the control plane's Redis, and what its failures mean to a user.

Two kinds of client, both our own (never the broker's pool, which a held SUBSCRIBE could
starve): a command client for the atomic scripts, and pub/sub clients with redis-py's silent
retries turned off, so that every disconnect reaches our subscription loop (which resyncs).
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from taskiq_abort.errors import (
    AbortBackendError,
    AbortBackendUnavailableError,
    AbortPermissionError,
)
from taskiq_abort.keys import KeySpace

_T = TypeVar("_T")


def safe_url(url: str) -> str:
    """``url`` with any password masked, for logs and error messages.

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


def command_client(url: str, timeout: float, **kwargs: Any) -> Redis:
    """The client for scripts and reads: a blocking pool, so that a burst of concurrent aborts
    (or of a worker's confirmations) waits for a free connection instead of failing with "Too
    many connections" once 100 are in use, which would read as "Redis unreachable"."""
    pool_kwargs: dict[str, Any] = {"max_connections": 100, "timeout": 10 * timeout}
    return Redis.from_pool(
        BlockingConnectionPool.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            # Retry a dropped connection, not a timeout: a hung Redis must fail abort() after
            # one ``timeout``, not three.
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.02), 2, (rexc.ConnectionError,)),
            **{**pool_kwargs, **kwargs},
        )
    )


def pubsub_client(url: str, timeout: float, **kwargs: Any) -> Redis:
    """A client for one subscription: no silent retries, no read timeout (it waits)."""
    return Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=None,
        retry=Retry(NoBackoff(), 0),
        **kwargs,
    )


async def call(url: str, keys: KeySpace, what: str, op: Awaitable[_T]) -> _T:
    """Await ``op``; turn Redis's errors into ours, with a message that says what to do."""
    try:
        return await op
    except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
        raise AbortBackendUnavailableError(
            f"cannot reach Redis at {safe_url(url)} for {what}: {str(exc).rstrip('.')}. "
            "Check the URL and that Redis is running."
        ) from exc
    except rexc.RedisError as exc:
        raise translate(url, keys, what, exc) from exc


def translate(url: str, keys: KeySpace, what: str, exc: BaseException) -> AbortBackendError:
    """Our error for a Redis error reply (``exc``)."""
    where, text = f"Redis at {safe_url(url)}", str(exc).rstrip(".")
    if isinstance(exc, rexc.NoPermissionError) or "NOPERM" in text:
        return AbortPermissionError(
            f"{where} refused {what}: {text}. Grant this user the keys '{keys.tag}:*' and "
            f"the channels '{keys.channel_prefix}*' (see docs/acl.md)."
        )
    return AbortBackendError(
        f"{where} failed {what}: {type(exc).__name__}: {text}. taskiq-abort needs a "
        "writable Redis >= 6.2 primary (not a replica or a proxy) with Lua scripting."
    )
