"""Connections to the control plane's Redis, and what its failures mean to a user.

This is the only module that knows the topology: one Redis, a Redis Cluster, or a master that
Sentinel manages. Everything else asks it for clients and never branches on the kind.

Three kinds of connection, all our own (never the broker's pool, which a held SUBSCRIBE could
starve): a command client for the atomic scripts; pub/sub connections with redis-py's silent
retries turned off, so that every disconnect reaches our subscription loop (which resyncs); and
raw connections for the lanes (``lane.py``), to the master that owns the prefix's slot.
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from redis import exceptions as rexc
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import (
    AbstractConnection,
    BlockingConnectionPool,
    ConnectionPool,
    SSLConnection,
)
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff

from taskiq_abort._scrub import safe_url
from taskiq_abort._wire.keys import KeySpace
from taskiq_abort.backends.base import NotDurableError
from taskiq_abort.backends.redis.lane import Ask, NotReplicatedError
from taskiq_abort.errors import (
    AbortBackendError,
    AbortBackendUnavailableError,
    AbortConfigError,
    AbortPermissionError,
)

_T = TypeVar("_T")
CommandClient = Redis | RedisCluster
KnownReplicas = Callable[[Ask], Awaitable[int | None]]
"""How many replicas the topology counts for the master; ``None``: it cannot tell."""

# Failures of a Cluster in transition (a master died, a slot is moving): transient.
_CLUSTER_TRANSIENT = (
    rexc.ClusterDownError,
    rexc.SlotNotCoveredError,
    rexc.TryAgainError,
    rexc.MasterDownError,
    rexc.ClusterError,
)


def _params(*callables: Any) -> set[str]:
    return {
        name
        for fn in callables
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and name != "self"
    }


# redis-py options a user may pass through (everything but what the topology itself sets).
_STANDALONE_OPTIONS = _params(Redis.__init__, AbstractConnection.__init__, SSLConnection.__init__)
_CLUSTER_OPTIONS = _params(RedisCluster.__init__)
_OURS = {"host", "port", "connection_pool", "startup_nodes", "decode_responses", "retry"}


def keyword_options(cls: type) -> list[str]:
    """The keyword-only options of ``cls`` (a backend's, the middleware's): the names a
    misspelt option is compared with."""
    params = inspect.signature(cls).parameters
    return [name for name, p in params.items() if p.kind is p.KEYWORD_ONLY]


def check_options(options: dict[str, Any], cluster: bool, known: Sequence[str] = ()) -> None:
    """Refuse keyword arguments that redis-py would not take (a misspelt option must not
    leave a worker without aborts until its first connection fails)."""
    allowed = (_CLUSTER_OPTIONS if cluster else _STANDALONE_OPTIONS) - _OURS
    for name in options:
        if name not in allowed:
            close = difflib.get_close_matches(name, [*known, *allowed], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise AbortConfigError(
                f"AbortMiddleware got an unknown option {name!r}{hint}; options other than "
                f"its own go to redis-py's {'RedisCluster' if cluster else 'Redis'} client"
            )


@dataclass
class Topology:
    """Where the control plane lives: ``url`` (one Redis, or any node of a Cluster with
    ``cluster``), or the master ``master_name`` that the ``sentinels`` manage."""

    url: str | None
    cluster: bool = False
    sentinels: Sequence[tuple[str, int]] = ()
    master_name: str | None = None
    sentinel_kwargs: dict[str, Any] | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """Where the control plane is, safe to print."""
        if self.sentinels:
            hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
            return f"master {self.master_name!r} of sentinels {hosts}"
        where = safe_url(self.url or "")
        return f"Redis Cluster at {where}" if self.cluster else f"Redis at {where}"

    def _sentinel(self, timeout: float, **kwargs: Any) -> Sentinel:
        sentinel_kwargs = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
        return Sentinel(  # type: ignore[no-untyped-call,unused-ignore]
            list(self.sentinels),
            sentinel_kwargs={**sentinel_kwargs, **(self.sentinel_kwargs or {})},
            **{**self.kwargs, **kwargs},
        )

    def command_client(self, timeout: float) -> CommandClient:
        """The client for scripts and reads. A dropped connection is retried, a timeout is
        not: a hung Redis must fail abort() after one ``timeout``, not three."""
        retry = Retry(ExponentialBackoff(cap=0.25, base=0.02), 2, (rexc.ConnectionError,))
        common: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,
        }
        if self.cluster:
            assert self.url is not None
            return RedisCluster.from_url(self.url, **{**common, "retry": retry, **self.kwargs})
        if self.sentinels:
            assert self.master_name is not None
            sentinel = self._sentinel(timeout)
            client: Redis = sentinel.master_for(self.master_name, retry=retry, **common)
            return client
        # A blocking pool: a burst of concurrent aborts waits for a free connection instead of
        # failing with "Too many connections" once 100 are in use.
        assert self.url is not None
        pool_kwargs: dict[str, Any] = {"max_connections": 100, "timeout": 10 * timeout}
        return Redis.from_pool(
            BlockingConnectionPool.from_url(
                self.url, retry=retry, **{**common, **pool_kwargs, **self.kwargs}
            )
        )

    async def owner(self, cmd: CommandClient, key: str, refresh: bool) -> ClusterNode:
        """The Cluster master serving ``key``'s slot (re-reading the slot map if ``refresh``)."""
        assert isinstance(cmd, RedisCluster)
        await cmd.initialize()
        if refresh:
            await cmd.nodes_manager.initialize()
        node = cmd.get_node_from_key(key)
        if node is None:
            raise rexc.SlotNotCoveredError(f"no master serves the slot of {key!r} yet")
        return node

    async def lane_connection(
        self, cmd: CommandClient, key: str, fresh: bool
    ) -> AbstractConnection:
        """A new, unconnected connection to the master serving ``key`` (``lane.py``)."""
        if isinstance(cmd, RedisCluster):
            node = await self.owner(cmd, key, refresh=fresh)
            return node.connection_class(
                **{**node.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
            )
        # Sentinel's pool asks the sentinels for the current master at every connect.
        conn: AbstractConnection = cmd.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        return conn

    def known_replicas(self, cmd: CommandClient) -> KnownReplicas | None:
        """How many replicas the topology still counts as up for the master (``lane.py`` waits
        for them even while they are not connected: one promoted away from a master that still
        serves, or cut off from it by a partition, is one). Sentinel: the replicas the sentinels
        list and could promote. Cluster: the master's replicas in its node table, not failed
        (a replica only suspected, ``fail?``, still counts). ``None`` for one Redis: its own
        count."""
        if self.cluster:
            return _cluster_replicas
        if not self.sentinels:
            return None
        assert self.master_name is not None
        sentinel: Sentinel = cmd.connection_pool.sentinel_manager  # type: ignore[union-attr]
        name = self.master_name

        async def count(ask: Ask) -> int | None:
            # Every sentinel (each call bounded by its socket timeout): the most any lists.
            # None answering (a partition?): the caller assumes the most replicas.
            answers = await asyncio.gather(
                *(node.sentinel_slaves(name) for node in sentinel.sentinels),
                return_exceptions=True,
            )
            listed = [
                sum(1 for replica in answer if _promotable(replica))
                for answer in answers
                if not isinstance(answer, BaseException)
            ]
            return max(listed, default=None)

        return count

    async def pubsub(self, cmd: CommandClient, channel: str, timeout: float, fresh: bool) -> PubSub:
        """A pub/sub connection for ``channel``, without silent retries nor read timeout."""
        quiet: dict[str, Any] = {
            "socket_connect_timeout": timeout,
            "socket_timeout": None,
            "retry": Retry(NoBackoff(), 0),
        }
        if isinstance(cmd, RedisCluster):  # straight to the slot's master: sharded pub/sub
            node = await self.owner(cmd, channel, refresh=fresh)
            kwargs = {**node.connection_kwargs, **quiet}
            pool = ConnectionPool(connection_class=node.connection_class, **kwargs)
            return Redis(connection_pool=pool).pubsub()
        if self.sentinels:  # the command client's Sentinel, which finds the current master
            assert self.master_name is not None
            sentinel: Sentinel = cmd.connection_pool.sentinel_manager  # type: ignore[attr-defined]
            client: Redis = sentinel.master_for(self.master_name, **quiet)
            return client.pubsub()
        assert self.url is not None
        return Redis.from_url(self.url, **{**quiet, **self.kwargs}).pubsub()

    async def check(self, cmd: CommandClient) -> None:
        """:class:`AbortConfigError` when the server is not the kind configured."""
        if isinstance(cmd, RedisCluster):
            try:
                await cmd.initialize()
            except rexc.RedisClusterException as exc:
                if "not enabled" in str(exc) or "cluster mode" in str(exc).lower():
                    raise AbortConfigError(
                        f"{self.where} is not a Redis Cluster ({exc}): drop cluster=True "
                        "(CLI: --cluster)"
                    ) from exc
                raise
            return
        if self.sentinels:
            assert self.master_name is not None
            sentinel = self._sentinel(3.0)
            try:
                await sentinel.discover_master(self.master_name)
            except MasterNotFoundError as exc:
                known = await _known_masters(sentinel)
                if known is not None and self.master_name not in known:
                    raise AbortConfigError(
                        f"the sentinels know no master named {self.master_name!r} (they "
                        f"monitor {sorted(known) or 'none'}): fix master_name (CLI: --master-name)"
                    ) from exc
                raise
            finally:
                for s in sentinel.sentinels:
                    await s.aclose()
            return
        try:
            info = await cmd.info("server")
        except rexc.NoPermissionError:
            return  # a user with only the documented rights; a Cluster then answers MOVED
        mode = info.get("redis_mode") or info.get("server_mode")  # Valkey 8+: server_mode
        if mode == "cluster":
            raise AbortConfigError(
                f"{self.where} is a Redis Cluster node: pass cluster=True (CLI: --cluster)"
            )
        if mode == "sentinel":
            raise AbortConfigError(
                f"{self.where} is a Sentinel, not a Redis: pass sentinels=[(host, port)] and "
                "master_name (CLI: --sentinel host:port --master-name NAME)"
            )


def _promotable(replica: dict[str, Any]) -> bool:
    """A replica the sentinels could promote: neither down nor out of their reach (they skip
    those when they pick one; a dead old master listed under the new one is such)."""
    return not (replica["is_sdown"] or replica["is_odown"] or replica["is_disconnected"])


async def _cluster_replicas(ask: Ask) -> int | None:
    """The replicas of the node ``ask`` talks to, in its ``CLUSTER NODES`` table, not failed.

    ``CLUSTER NODES`` lines: ``<id> <addr> <flags> <master id or -> ...``."""
    try:
        table = str(await ask(["CLUSTER", "NODES"]))
    except rexc.NoPermissionError:
        return 0  # the master's own count stands
    rows = [line.split() for line in table.splitlines() if line.strip()]
    me = next((row[0] for row in rows if "myself" in row[2].split(",")), None)
    return sum(
        1
        for row in rows
        if row[3] == me and "slave" in row[2].split(",") and "fail" not in row[2].split(",")
    )


async def _known_masters(sentinel: Sentinel) -> set[str] | None:
    """The master names the first reachable sentinel monitors (``None``: none reachable)."""
    for node in sentinel.sentinels:
        try:
            masters: Any = await node.sentinel_masters()
            return set(masters)
        except (rexc.RedisError, OSError):
            continue
    return None


async def call(where: str, keys: KeySpace, what: str, op: Awaitable[_T]) -> _T:
    """Await ``op``; turn Redis's errors into ours, with a message that says what to do."""
    try:
        return await op
    except MasterNotFoundError as exc:
        raise AbortBackendUnavailableError(
            f"no master for {where} while {what}: {exc}. Check the sentinels."
        ) from exc
    except NotReplicatedError as exc:
        raise NotDurableError(
            f"{where} did not get {what} to its replicas in time ({exc}): a replica is stalled "
            "or still syncing, or a failover is under way",
            exc.reply,
        ) from exc
    except (rexc.ConnectionError, rexc.TimeoutError, OSError, *_CLUSTER_TRANSIENT) as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            raise AbortBackendUnavailableError(
                f"TLS to {where} failed for {what}: the server's certificate is not signed by a "
                "CA this client trusts (or names another host): check ssl_ca_certs "
                f"({str(exc).rstrip('.')})"
            ) from exc
        raise AbortBackendUnavailableError(
            f"cannot reach {where} for {what}: {str(exc).rstrip('.')}. "
            "Check the URL and that Redis is running."
        ) from exc
    except rexc.RedisError as exc:
        raise translate(where, keys, what, exc) from exc


def translate(where: str, keys: KeySpace, what: str, exc: BaseException) -> AbortBackendError:
    """Our error for a Redis error reply (``exc``)."""
    text = str(exc).rstrip(".")
    # A command a script runs, refused by the ACL: "ERR The user executing the script can't
    # run this command or subcommand" (Redis 7), with no NOPERM in it.
    if isinstance(exc, rexc.NoPermissionError) or "NOPERM" in text or "can't run this" in text:
        return AbortPermissionError(
            f"{where} refused {what}: {text}. Grant this user the keys '{keys.tag}:*', "
            f"the channels '{keys.channel_prefix}*' and the commands of docs/acl.md."
        )
    if "DB index is out of range" in text:
        raise AbortConfigError(
            f"{where} has no such database ({what}: {text}): the number after the URL's last "
            "'/' must be below the server's `databases` setting (16 by default), e.g. /0"
        ) from exc
    if text.startswith(("MOVED", "ASK ", "CROSSSLOT")) or "cluster support disabled" in text:
        raise AbortConfigError(
            f"{where} answered {text.split()[0]} to {what}: the server is "
            + (
                "not a Redis Cluster: drop cluster=True"
                if "disabled" in text
                else "a Redis Cluster: pass cluster=True (CLI: --cluster)"
            )
        ) from exc
    return AbortBackendError(
        f"{where} failed {what}: {type(exc).__name__}: {text}. taskiq-abort needs a "
        "writable Redis >= 6.2 primary (not a replica or a proxy) with Lua scripting."
    )
