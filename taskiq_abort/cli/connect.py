"""Where the CLI connects: a bare Redis URL, or the application's broker and its middleware."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskiq_abort._results import stored_results
from taskiq_abort._scrub import passwords, safe_url
from taskiq_abort._scrub import scrub as _scrub
from taskiq_abort._wire.keys import DEFAULT_PREFIX, KeySpace
from taskiq_abort.backends.base import AbortBackend
from taskiq_abort.backends.memory import MemoryAbortBackend
from taskiq_abort.backends.redis import RedisAbortBackend
from taskiq_abort.errors import AbortBackendError, AbortConfigError

if TYPE_CHECKING:  # taskiq is imported only with --broker: `ls --redis-url` starts in ~0.1 s
    from taskiq import AsyncBroker, AsyncResultBackend

ENV_URL = "TASKIQ_ABORT_REDIS_URL"
DEFAULT_TIMEOUT = 5.0
_CLOSE_TIMEOUT = 3.0
_secrets: set[str] = set()


class CLIError(Exception):
    """A problem the user can fix (exit status 2), reported as one line."""


def scrub(message: str, url: str | None = None) -> str:
    """``message`` without any Redis password the CLI has seen (or ``url``'s)."""
    return _scrub(message, {*_secrets, *passwords(url)})


@dataclass
class Connection:
    """The control plane, and the result backend when a broker was loaded."""

    backend: AbortBackend
    result_backend: AsyncResultBackend[Any] | None
    timeout: float
    """Default seconds to wait for a worker's confirmation."""
    where: str
    """Where we are connected, safe to print (no password)."""

    @property
    def prefix(self) -> str:
        return self.backend.prefix

    async def close(self) -> None:
        """Release connections, in bounded time whatever state Redis is in."""
        if self.result_backend is not None:
            with contextlib.suppress(Exception, asyncio.TimeoutError):
                await asyncio.wait_for(self.result_backend.shutdown(), _CLOSE_TIMEOUT)
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(self.backend.close(), _CLOSE_TIMEOUT)


def load_broker(spec: str) -> AsyncBroker:
    """Import ``module:variable`` like ``taskiq worker`` does (a factory function is called)."""
    if spec.count(":") != 1 or not all(spec.split(":")):
        raise CLIError(f"--broker {spec!r}: expected module:variable, e.g. myapp.tasks:broker")
    from taskiq import AsyncBroker
    from taskiq.cli.utils import import_object

    try:
        obj = import_object(spec)
        if inspect.isfunction(obj):
            obj = obj()
    except Exception as exc:
        detail = " ".join(str(exc).split()) or "(no message)"
        raise CLIError(f"cannot load broker {spec!r}: {type(exc).__name__}: {detail}") from exc
    if not isinstance(obj, AsyncBroker):
        raise CLIError(
            f"--broker {spec!r} is a {type(obj).__name__}, not a TaskIQ broker "
            "(or a function that returns one)"
        )
    return obj


@dataclass(frozen=True)
class Where:
    """The topology options: ``--cluster``, ``--sentinel HOST:PORT,... --master-name NAME``."""

    cluster: bool = False
    sentinel: str | None = None
    master_name: str | None = None

    def sentinels(self) -> list[tuple[str, int]]:
        """``--sentinel`` as ``(host, port)`` pairs; :class:`CLIError` when malformed."""
        out = []
        for item in (self.sentinel or "").split(","):
            host, _, port = item.strip().rpartition(":")
            if not host or not port.isdigit():
                raise CLIError(f"--sentinel {self.sentinel!r}: expected HOST:PORT[,HOST:PORT...]")
            out.append((host, int(port)))
        return out


async def connect(
    redis_url: str | None,
    env_url: str | None,
    broker_spec: str | None,
    prefix: str | None,
    topology: Where = Where(),
) -> Connection:
    """Open the connection the options ask for; :class:`CLIError` when they do not add up."""
    if broker_spec is not None:
        if redis_url is not None or topology != Where():
            raise CLIError(
                "give --redis-url (--cluster, --sentinel) or --broker, not both "
                "(the broker sets them)"
            )
        return await _from_broker(broker_spec, prefix)
    if (topology.sentinel is None) != (topology.master_name is None):
        raise CLIError("--sentinel and --master-name go together")
    if topology.sentinel is not None and (topology.cluster or redis_url):
        raise CLIError("give --sentinel or --redis-url (with --cluster), not both")
    url = redis_url or (env_url if topology.sentinel is None else None)
    if not url and topology.sentinel is None:
        raise CLIError(
            f"nowhere to connect: pass --redis-url URL, set ${ENV_URL}, "
            "--sentinel HOST:PORT --master-name NAME, or --broker module:broker"
        )
    _secrets.update(passwords(url))
    try:  # an empty --prefix is refused, never silently the default
        KeySpace(DEFAULT_PREFIX if prefix is None else prefix)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    pfx = DEFAULT_PREFIX if prefix is None else prefix
    try:
        if topology.sentinel is not None:
            backend = RedisAbortBackend(
                sentinels=topology.sentinels(), master_name=topology.master_name, prefix=pfx
            )
        else:
            backend = RedisAbortBackend(url, cluster=topology.cluster, prefix=pfx)
    except ValueError as exc:
        raise CLIError(f"bad Redis URL {safe_url(url or '')!r}: {exc}") from exc
    try:  # the wrong kind of server: say how to fix it, before anything else
        await backend.check()
    except AbortConfigError as exc:
        await backend.close()
        raise CLIError(str(exc)) from exc
    except AbortBackendError:
        pass  # unreachable: the command says so, with what it was doing
    return Connection(backend, None, DEFAULT_TIMEOUT, backend.where.removeprefix("Redis at "))


async def _from_broker(spec: str, prefix: str | None) -> Connection:
    from taskiq_abort.api import find_middleware

    broker = load_broker(spec)
    try:
        middleware = find_middleware(broker)
    except Exception as exc:
        raise CLIError(f"--broker {spec!r}: {exc}") from exc
    backend = middleware.backend
    url = backend.url
    if isinstance(url, str):
        _secrets.update(passwords(url))
    if isinstance(backend, MemoryAbortBackend):
        raise CLIError(
            f"--broker {spec!r}: its AbortMiddleware has no Redis URL (in-process backend), "
            "so no other process can reach its workers"
        )
    conn = Connection(
        backend,
        None,
        middleware.abort_timeout,
        f"{safe_url(url) if isinstance(url, str) else repr(backend)} (broker {spec})",
    )
    if prefix is not None and prefix != conn.prefix:
        raise CLIError(
            f"--prefix {prefix!r} contradicts the broker's AbortMiddleware "
            f"(prefix {conn.prefix!r}); drop --prefix"
        )
    result_backend = stored_results(broker.result_backend)
    if result_backend is not None:
        try:
            await result_backend.startup()
        except Exception as exc:
            await conn.close()
            raise CLIError(f"--broker {spec!r}: its result backend did not start: {exc}") from exc
        conn.result_backend = result_backend
    return conn
