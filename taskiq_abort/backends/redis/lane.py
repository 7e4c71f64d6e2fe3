"""A fast lane for the worker's hot path: one script, one connection, plain RESP.

Every task start costs one call of the batched registry script (``scripts.SYNC``) when tasks
arrive one at a time. Through redis-py's client that call costs several times the Redis work in
Python alone (connection pool, retry and timeout wrappers, command packing, reply callbacks):
measured here at 5-7x what writing the packed command and parsing the reply costs. The lane
keeps a connection of its own, set up by redis-py (URL, TLS, AUTH, database: everything the
user configured), and then speaks RESP on it directly. Calls are serialised by the worker (one
batch in flight), so there is no pipelining to manage.

Durable calls send ``WAIT <n> <ms>`` right behind the script on the same connection, ``n`` being
the replicas the master has (up to ``replicas``), so the reply comes only once they hold the
write (see docs/deploy.md, "the failover invariant").

Faults: any connection problem closes the lane and raises ``redis.exceptions.ConnectionError``
(the caller maps it, and the next call reconnects); a reply that does not arrive in ``timeout``
aborts the connection; an error reply raises ``redis.exceptions.ResponseError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from redis import exceptions as rexc
from redis.asyncio.connection import AbstractConnection

Ask = Callable[[Sequence[str]], Awaitable[Any]]
"""Sends one command on the lane's connection and returns the reply."""


def pack(args: Sequence[str | int | bytes]) -> bytes:
    """One RESP command.

    >>> pack(["EVALSHA", "ab", 0])
    b'*3\\r\\n$7\\r\\nEVALSHA\\r\\n$2\\r\\nab\\r\\n$1\\r\\n0\\r\\n'
    """
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


async def read_reply(reader: asyncio.StreamReader) -> Any:
    """One RESP2/RESP3 reply, strings decoded as UTF-8; an error reply is raised."""
    line = await reader.readline()
    if not line.endswith(b"\r\n"):
        raise rexc.ConnectionError("connection closed by the server")
    kind, rest = line[:1], line[1:-2]
    if kind in (b"$", b"="):  # bulk string / verbatim
        size = int(rest)
        if size < 0:
            return None
        data = (await reader.readexactly(size + 2))[:-2]
        return (data[4:] if kind == b"=" else data).decode("utf-8", "replace")  # "txt:..."
    if kind == b":":
        return int(rest)
    if kind in (b"*", b"~", b">"):  # array / set / push
        size = int(rest)
        return None if size < 0 else [await read_reply(reader) for _ in range(size)]
    if kind == b"%":  # map, as a flat list like RESP2's
        return [await read_reply(reader) for _ in range(2 * int(rest))]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        text = rest.decode("utf-8", "replace")
        if text.startswith("NOPERM"):
            raise rexc.NoPermissionError(text)
        raise rexc.ResponseError(text)
    if kind == b"_":
        return None
    if kind == b"#":
        return rest == b"t"
    if kind == b",":
        return float(rest)
    raise rexc.ConnectionError(f"unexpected reply from Redis: {line[:40]!r}")


@dataclass(frozen=True)
class LuaScript:
    """A Lua script and its SHA1 (``EVALSHA``), loaded with ``EVAL`` when the server lacks it."""

    source: str
    sha: str = field(init=False)  # computed once: it is sent with every start check

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


_UNREPLICATED_HOLD = 5.0  # seconds durable calls wait only briefly after a short WAIT
_QUICK_WAIT_MS = 20
_RECOUNT = 1.0  # seconds a master's replica count is trusted before it is read again


class NotReplicatedError(rexc.ConnectionError):
    """``WAIT`` saw fewer replicas acknowledge the write than the master has: a replica is
    stalled or still syncing, or the master is a stale one (failed over). The script ran all
    the same, and ``reply`` is its answer: true on that master, but it may not survive a
    failover."""

    def __init__(self, message: str, reply: Any) -> None:
        super().__init__(message)
        self.reply = reply


def connected_replicas(info: str) -> int:
    """The replicas attached to a master, from its ``INFO replication`` text. A replica that
    is connected but stalled counts (until ``repl-timeout`` drops it): ``WAIT`` must hear from
    it, or a write it never got could be all a failover to it loses.

    >>> connected_replicas("# Replication\\r\\nrole:master\\r\\nconnected_slaves:2\\r\\n")
    2
    >>> connected_replicas("role:slave\\r\\nconnected_slaves:0\\r\\n")
    0
    """
    for line in info.splitlines():
        name, _, value = line.partition(":")
        if name == "connected_slaves":
            return int(value)
    return 0


class ScriptLane:
    """Calls Lua scripts over one dedicated connection to the master of the prefix's slot.

    :param make_connection: a new redis-py connection, not yet connected, to the current
        master (``fresh``: after a failure, so look the master up again).
    :param timeout: seconds a call may take before the connection counts as broken.
    :param replicas: at most this many replicas must acknowledge a ``durable`` call (``WAIT``).
    :param known_replicas: the replicas the topology still counts as up for the master (given
        a way to ask the master), read at each connect: they count even while not connected (a
        replica just promoted away from a master that still serves, during ``SENTINEL
        FAILOVER``, or cut off from it by a partition); ``None`` when it cannot tell: then
        ``replicas``.

    A durable call waits for as many replicas as the master has, up to ``replicas``: the
    count is read (``INFO replication``) at each connect and at most every second. A master
    without a replica (promoted in a failover, or by design) takes durable writes at once. A
    count that went down is trusted only from a master looked up afresh, so that a master
    that lost its replica to a failover is left at once for the new one.

    A connection failure, a redirection (``MOVED``/``ASK``: the slot moved), ``READONLY`` (a
    demoted master) or a write not acknowledged by enough replicas drops the connection and
    tries once more on a fresh one, so that the caller follows a failover at once; a write
    still short of replicas then raises :class:`NotReplicatedError` with the script's answer.
    After that, durable calls wait only briefly (20 ms) for the replicas for a few seconds,
    instead of each waiting a whole WAIT timeout twice.
    """

    def __init__(
        self,
        make_connection: Callable[[bool], Awaitable[AbstractConnection]],
        timeout: float,
        replicas: int = 0,
        known_replicas: Callable[[Ask], Awaitable[int | None]] | None = None,
    ) -> None:
        self._make_connection = make_connection
        self._known_replicas = known_replicas
        self.timeout = timeout
        self.replicas = replicas
        self.needed = 0
        """Replicas the next durable call waits for: the master's, up to ``replicas``."""
        self._counted_at = float("-inf")
        self._conn: AbstractConnection | None = None
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()
        self._fresh = False
        self._unreplicated_until = float("-inf")

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        conn = await asyncio.wait_for(self._make_connection(self._fresh), self.timeout)
        await asyncio.wait_for(conn.connect(), self.timeout)  # type: ignore[no-untyped-call]
        reader = getattr(conn, "_reader", None)
        writer = getattr(conn, "_writer", None)
        if not isinstance(reader, asyncio.StreamReader) or writer is None:  # pragma: no cover
            await conn.disconnect()
            raise rexc.ConnectionError("redis-py's connection exposes no streams")
        self._conn, self._streams, self._fresh = conn, (reader, writer), False
        if self.replicas > 0:
            self.needed = await self._count(fresh=True)
        return reader, writer

    async def _count(self, fresh: bool) -> int:
        """The replicas this master has, up to ``replicas`` (``replicas`` itself when the user
        may not run ``INFO``: nothing to count with)."""
        self._counted_at = asyncio.get_running_loop().time()
        try:
            have = connected_replicas(await self._roundtrip(["INFO", "replication"], None))
        except rexc.NoPermissionError:
            return self.replicas
        if fresh and self._known_replicas is not None:
            known = await self._known_replicas(lambda command: self._roundtrip(command, None))
            have = self.replicas if known is None else max(have, known)
        return min(have, self.replicas)

    async def _recount(self) -> None:
        """Read the master's replica count again when it is older than a second. Fewer than
        before: leave this master and count on a freshly looked-up one (it may have lost its
        replica to a failover, and still serve)."""
        if self._streams is None or asyncio.get_running_loop().time() < self._counted_at + _RECOUNT:
            return
        have = await self._count(fresh=False)
        if have < self.needed:
            self._drop()
            self._fresh = True
        else:
            self.needed = have

    async def __call__(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[str | int],
        durable: bool = False,
    ) -> Any:
        """Run ``script``; with ``durable``, return only once the master's replicas have it
        (:class:`NotReplicatedError`, with the script's answer, when they do not in time)."""
        wait = durable and self.replicas > 0
        async with self._lock:
            now = asyncio.get_running_loop().time()
            # The replicas did not answer a moment ago: don't make every call wait a whole WAIT
            # timeout (twice) for them; a short WAIT tells whether they are back.
            quick = _QUICK_WAIT_MS if wait and now < self._unreplicated_until else None
            try:
                if wait and quick is None:
                    await self._recount()
                result = await self._call(script, keys, args, wait, quick)
            except rexc.TimeoutError:
                raise  # a hung server: don't spend a second timeout on it
            except rexc.ConnectionError as exc:
                short = exc if isinstance(exc, NotReplicatedError) else None
                self._fresh = True  # follow a failover: look the master up again
                try:
                    result = await self._call(script, keys, args, wait, quick)
                except NotReplicatedError:
                    self._unreplicated_until = now + _UNREPLICATED_HOLD
                    raise
                except Exception:
                    if short is None:
                        raise
                    raise short from None  # the script ran there: its answer stands
            self._unreplicated_until = float("-inf")
            return result

    async def _call(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[str | int],
        wait: bool,
        wait_ms: int | None = None,
    ) -> Any:
        tail = [len(keys), *keys, *args]
        if self._streams is None:
            await self._connect()  # counts the master's replicas first
        wait = wait and self.needed > 0  # a master without replicas: nothing to wait for
        wait_ms = (wait_ms or max(1, int(self.timeout * 500))) if wait else None
        try:
            return await self._roundtrip(["EVALSHA", script.sha, *tail], wait_ms)
        except rexc.ResponseError as exc:
            text = str(exc)
            if text.startswith(("MOVED", "ASK ", "READONLY", "TRYAGAIN", "CLUSTERDOWN")):
                self._drop()
                self._fresh = True
                raise rexc.ConnectionError(f"the master moved: {text}") from exc
            if not text.startswith("NOSCRIPT"):
                raise
            return await self._roundtrip(["EVAL", script.source, *tail], wait_ms)  # loads it

    async def _roundtrip(self, command: Sequence[str | int], wait_ms: int | None) -> Any:
        reader, writer = self._streams or await self._connect()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            writer.transport.abort()  # the pending read fails at once

        # A timer instead of wait_for(): no extra task or timeout context on the hot path.
        guard = asyncio.get_running_loop().call_later(self.timeout, expire)
        try:
            data = pack(command)
            wait = wait_ms is not None
            if wait_ms is not None:  # WAIT right behind it, on the same connection
                data += pack(["WAIT", self.needed, wait_ms])
            writer.write(data)
            error: rexc.ResponseError | None = None
            try:
                reply = await read_reply(reader)
            except rexc.ResponseError as exc:
                error = exc  # still read WAIT's reply, to stay in step
            acked = await read_reply(reader) if wait else 0
            if error is not None:
                raise error
            if wait and int(acked) < self.needed:
                self._drop()
                raise NotReplicatedError(
                    f"{acked} of {self.needed} replica(s) acknowledged the write", reply
                )
            return reply
        except rexc.ResponseError:
            raise  # an error reply: the connection is still in step
        except (OSError, asyncio.IncompleteReadError, ValueError, rexc.ConnectionError) as exc:
            self._drop()
            if isinstance(exc, NotReplicatedError):
                raise
            if expired:
                raise rexc.TimeoutError(f"no reply within {self.timeout} s") from exc
            raise rexc.ConnectionError(str(exc) or type(exc).__name__) from exc
        except BaseException:  # cancelled mid-call: a reply may still come, out of step
            self._drop()
            raise
        finally:
            guard.cancel()

    def _drop(self) -> None:
        if self._streams is not None:
            self._streams[1].transport.abort()
        self._conn, self._streams = None, None

    async def close(self) -> None:
        conn, self._conn, self._streams = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection may fail to close
                await asyncio.wait_for(conn.disconnect(), 1.0)
