"""Delivering an abort to an async task body: our own ``CancelledError``, at its ``await``.

:class:`Body` awaits the body coroutine as ``yield from`` would, and is the only way an abort
reaches it:

- It wakes the task running the body with ``Task.cancel()``, only ever from outside that task,
  while the task is suspended at one of the body's awaits (from inside, the wake-up waits for
  the next suspension). The task's next step, which resumes the body through :class:`Body`,
  consumes that cancel (CPython 3.10-3.12 offer no way to take back a pending one, so none may
  outlive the body), and every cancel we made is withdrawn (``uncancel``) when the body ends.
- When the task resumes, :class:`Body` throws a new ``CancelledError`` into the body at its
  await instead of what the wake-up brought: the ``CancelledError`` it caused, or the value
  or error of an awaited child task that absorbed it. To the body it is the cancellation of
  a ``Task.cancel()``, and its clean-up runs as asyncio runs it.
- We know the body dropped our exception when that instance dies (a weak reference to a mark
  only it holds) while the body runs on (CPython 3.10/3.11's ``asyncio.wait_for`` drops one
  when the awaited operation completes at the same moment; so can task code): it is delivered
  again at the body's next await. ``cancel_mode="level"`` delivers one at every await after
  the first, as anyio's cancel scopes do. Either way, after :data:`PROMPT` deliveries a body
  still running gets one per :data:`INTERVAL` seconds (it catches every one: no CPU spin), with
  one warning naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import weakref
from collections.abc import Coroutine, Generator
from typing import Any, Protocol

logger = logging.getLogger("taskiq_abort")

CANCEL_MSG = "aborted by taskiq-abort"
PROMPT = 4
"""Deliveries made at once; a body that runs on after this many gets one per ``INTERVAL``."""
INTERVAL = 1.0


class _Mark:
    """Rides on the ``CancelledError`` an abort throws and dies with it: the driver's weak
    reference to it tells that the body dropped that exception. The exception itself is a plain
    ``CancelledError``, not a subclass: Python 3.11/3.12's ``TaskGroup`` and ``timeout`` test
    ``type is CancelledError`` and would turn a subclass into an error of the body."""

    __slots__ = ("__weakref__",)


_MARK_ATTR = "_taskiq_abort_mark"


class Redeliveries:
    """How often this process found an abort's cancellation swallowed and delivered it again."""

    count = 0


class _Run(Protocol):
    @property
    def task_id(self) -> str: ...

    shields: int


class Body:
    """Awaits one attempt's task body and delivers its abort (see the module's docstring).

    Costs one generator step per await of the body; nothing is inspected until an abort
    arrives.
    """

    __slots__ = (
        "cancels",
        "coro",
        "deliveries",
        "ended",
        "host",
        "level",
        "live",
        "loop",
        "pending",
        "reached",
        "run",
        "timer",
        "wanted",
        "warned",
    )

    def __init__(self, run: _Run, coro: Coroutine[Any, Any, Any], level: bool = False) -> None:
        self.run, self.coro, self.level = run, coro, level
        host = asyncio.current_task()
        assert host is not None, "a task body runs in a task"
        self.host: asyncio.Task[Any] = host
        self.loop = asyncio.get_running_loop()
        self.wanted = False  # a delivery is due (made as soon as the body can take it)
        self.pending = False  # the host was woken for it: throw at the next resumption
        self.reached = False  # one of ours was thrown into the body
        self.ended = False
        self.live: weakref.ref[_Mark] | None = None  # on the last one thrown
        self.deliveries = 0
        self.cancels = 0  # Task.cancel() calls on ``host`` not withdrawn yet
        self.timer: asyncio.Handle | None = None
        self.warned = False

    # --- requests (from anywhere on the loop) ----------------------------------------
    def request(self) -> None:
        """Deliver the abort; also called when a ``shield()`` section closes, to deliver one
        it held back."""
        if not self.reached:
            self.wanted = True
        self._wake()

    def _wake(self) -> None:
        if not self.wanted or self.ended or self.pending or self.timer or self.run.shields:
            return
        if asyncio.current_task() is self.host:  # the body runs: wake it once it suspends
            self.timer = self.loop.call_soon(self._fire)
            return
        self.wanted, self.pending = False, True
        self.cancels += 1
        self.host.cancel(CANCEL_MSG)

    def _fire(self) -> None:
        self.timer = None
        self._wake()

    def _again(self) -> None:
        """The body runs on after one of ours reached it: deliver another."""
        self.wanted = True
        if self.deliveries < PROMPT:
            self._wake()
            return
        if self.timer is None and not self.pending:
            self.timer = self.loop.call_later(INTERVAL, self._late)

    def _late(self) -> None:
        """The body still runs ``INTERVAL`` after its prompt deliveries. Said then, not at
        once: a task group waiting for its children's clean-up catches each cancellation of
        level mode for a few steps, and is not a body that carries on."""
        self.timer = None
        if not self.warned and not self.ended:
            self.warned = True
            logger.warning(
                "taskiq-abort: task %s keeps running after %d cancellations of its abort: its "
                "body (or code it awaits) catches CancelledError and carries on. It is "
                "cancelled again every %g s while it runs; its abort stays unconfirmed until "
                "it stops. Let CancelledError propagate to stop it.",
                self.run.task_id,
                self.deliveries,
                INTERVAL,
            )
        self._wake()

    def _died(self, ref: weakref.ref[_Mark]) -> None:
        # Any thread (the garbage collector may free it anywhere): hand over to the loop.
        if not self.ended and self.live is ref and not self.level:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to stop
                self.loop.call_soon_threadsafe(self._swallowed, ref)

    def _swallowed(self, ref: weakref.ref[_Mark]) -> None:
        if self.ended or self.live is not ref:
            return
        self.live = None
        Redeliveries.count += 1
        self._withdraw()  # that one was consumed: the body's cancelling() goes back
        self._again()

    def _withdraw(self) -> None:
        if sys.version_info >= (3, 11):
            while self.cancels and self.host.uncancel():
                self.cancels -= 1
        self.cancels = 0

    def _deliver(self, woke: BaseException | None) -> asyncio.CancelledError:
        """What to throw into the body now that the host woke for our cancellation."""
        self.pending, self.reached = False, True
        self.deliveries += 1
        ours = asyncio.CancelledError(CANCEL_MSG)
        if woke is not None and not isinstance(woke, asyncio.CancelledError):
            ours.__context__ = woke  # an awaited child turned our cancel into its error
        mark = _Mark()
        setattr(ours, _MARK_ATTR, mark)
        self.live = weakref.ref(mark, self._died)
        return ours

    def close(self) -> None:
        """The body ended: nothing of ours may outlive it."""
        self.ended, self.wanted = True, False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._withdraw()

    # --- the await -------------------------------------------------------------------
    def __await__(self) -> Generator[Any, Any, Any]:
        coro = self.coro
        send, throw = coro.send, coro.throw
        value: Any = None
        exc: BaseException | None = None
        try:
            while True:
                try:
                    yielded = send(value) if exc is None else throw(exc)
                except StopIteration as stop:
                    return stop.value
                exc = None  # ours, if the body dropped it, dies here
                if self.level and self.reached and not self.run.shields:
                    self._again()
                try:
                    value = yield yielded
                except GeneratorExit:
                    coro.close()
                    raise
                except BaseException as thrown:  # forwarded into the body, as ``yield from``
                    exc, value = thrown, None
                if self.pending:  # woken for our cancellation: it lands at this await
                    exc, value = self._deliver(exc), None
        finally:
            self.close()
