"""Awaiting a task body so that a cancellation it swallows is delivered again.

CPython 3.10/3.11's ``asyncio.wait_for`` drops a cancellation when the awaited operation
completes at the same moment (redis-py writes every command through it); so can task code.
An abort must still stop the body: see :class:`Body`.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine, Generator
from typing import Any, Protocol


class _Run(Protocol):
    cancels: int

    def redeliver(self) -> None: ...


def _handling(coro: object, exc: BaseException) -> bool:
    """Whether a frame of the suspended ``coro`` (or of what it awaits) is still handling
    ``exc``: in an ``except`` or ``finally`` block it raised, directly or as the cause or context
    of another exception. Such a frame holds the exception on its stack or in its exception
    state, which the garbage collector's referents show; a frame that swallowed it does not."""
    obj: object = coro
    while obj is not None:
        for ref in gc.get_referents(obj):
            depth = 0
            while isinstance(ref, BaseException) and depth < 8:
                if ref is exc:
                    return True
                ref, depth = ref.__cause__ or ref.__context__, depth + 1
        obj = getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
    return False


class Body:
    """Awaits the task body exactly as ``await body`` would (``yield from``), and watches the
    cancellations of an abort go through it.

    After a ``CancelledError`` of ours was thrown into the body, each time the body suspends
    again we check whether it is still handling that exception (clean-up in ``except`` or
    ``finally``: let it run, as asyncio does) or has dropped it (swallowed by the body or by
    code it awaited, e.g. 3.10/3.11's ``asyncio.wait_for``): then the abort is delivered again,
    at the ``await`` the body is now suspended in. Only costs anything once an abort arrived.
    """

    __slots__ = ("coro", "run")

    def __init__(self, run: _Run, coro: Coroutine[Any, Any, Any]) -> None:
        self.run, self.coro = run, coro

    def __await__(self) -> Generator[Any, Any, Any]:
        run, coro = self.run, self.coro
        value: Any = None
        thrown: BaseException | None = None
        ours: BaseException | None = None  # our cancellation, in flight in the body
        while True:
            try:
                yielded = coro.send(value) if thrown is None else coro.throw(thrown)
            except StopIteration as stop:
                return stop.value
            finally:
                thrown = None
            if ours is not None and not _handling(coro, ours):
                ours = None
                run.redeliver()
            try:
                value = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # forwarded into the body, as ``yield from`` does
                thrown, value = exc, None
                if run.cancels and isinstance(exc, asyncio.CancelledError):
                    ours = exc
