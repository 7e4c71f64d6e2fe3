"""A fast lane for the worker's hot path: one script, one connection, plain RESP.

Every task start costs one call of the batched registry script (``scripts.SYNC``) when tasks
arrive one at a time. Through redis-py's client that call costs several times the Redis work in
Python alone (connection pool, retry and timeout wrappers, command packing, reply callbacks):
measured here at 5-7x what writing the packed command and parsing the reply costs. The lane
keeps a connection of its own, set up by redis-py (URL, TLS, AUTH, database: everything the
user configured), and then speaks RESP on it directly. Calls are serialised by the worker (one
batch in flight), so there is no pipelining to manage.

Faults: any connection problem closes the lane and raises ``redis.exceptions.ConnectionError``
(the caller maps it, and the next call reconnects); a reply that does not arrive in ``timeout``
aborts the connection; an error reply raises ``redis.exceptions.ResponseError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from redis import exceptions as rexc
from redis.asyncio.connection import AbstractConnection


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
        data = await reader.readexactly(size + 2)
        return data[:-2].decode("utf-8", "replace")
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


class ScriptLane:
    """Calls one Lua script over a dedicated connection.

    :param make_connection: a redis-py connection, not yet connected (``pool.make_connection``).
    :param script: the Lua source (loaded with ``EVAL`` when the server does not know it).
    :param timeout: seconds a call may take before the connection counts as broken.
    """

    def __init__(
        self,
        make_connection: Callable[[], AbstractConnection],
        script: str,
        timeout: float,
    ) -> None:
        self._make_connection = make_connection
        self.script = script
        self.sha = hashlib.sha1(script.encode()).hexdigest()
        self.timeout = timeout
        self._conn: AbstractConnection | None = None
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        conn = self._make_connection()
        await asyncio.wait_for(conn.connect(), self.timeout)  # type: ignore[no-untyped-call]
        reader = getattr(conn, "_reader", None)
        writer = getattr(conn, "_writer", None)
        if not isinstance(reader, asyncio.StreamReader) or writer is None:  # pragma: no cover
            await conn.disconnect()
            raise rexc.ConnectionError("redis-py's connection exposes no streams")
        self._conn, self._streams = conn, (reader, writer)
        return reader, writer

    async def __call__(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        tail = [len(keys), *keys, *args]
        try:
            return await self._roundtrip(["EVALSHA", self.sha, *tail])
        except rexc.ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return await self._roundtrip(["EVAL", self.script, *tail])  # loads it, too

    async def _roundtrip(self, command: Sequence[str | int]) -> Any:
        reader, writer = self._streams or await self._connect()
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            writer.transport.abort()  # the pending read fails at once

        # A timer instead of wait_for(): no extra task or timeout context on the hot path.
        guard = asyncio.get_running_loop().call_later(self.timeout, expire)
        try:
            writer.write(pack(command))
            return await read_reply(reader)
        except rexc.ResponseError:
            raise  # an error reply: the connection is still in step
        except (OSError, asyncio.IncompleteReadError, ValueError, rexc.ConnectionError) as exc:
            self._drop()
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
