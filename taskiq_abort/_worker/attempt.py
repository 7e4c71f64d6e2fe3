"""One attempt of one task on this worker (:class:`RunningTask`), from ``pre_execute`` to
``post_save``: what the abort, its grace period and the body's stop need to know of it."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import threading
import time
from contextvars import ContextVar, Token
from typing import Any, Literal

from taskiq_abort._worker import limits as lim
from taskiq_abort._worker.body import Body
from taskiq_abort._worker.threads import ThreadInterrupt
from taskiq_abort.errors import TaskAbortedError, TaskExpired, TaskTimeLimitExceeded
from taskiq_abort.outcome import RunningEntry

CancelMode = Literal["edge", "level"]

MESSAGE_ATTR = "_taskiq_abort_run"
"""Attribute the middleware attaches to a ``TaskiqMessage`` (not a field: never serialized)."""

current_run: ContextVar[RunningTask | None] = ContextVar("taskiq_abort_run", default=None)
_run_ids = itertools.count(1)
logger = logging.getLogger("taskiq_abort")


class RunningTask:
    """One attempt of one task on this worker, from ``pre_execute`` to ``post_save``."""

    __slots__ = (
        "_async_event",
        "_event",
        "_grace_timer",
        "_limit_timer",
        "abort_requested",
        "asked",
        "body",
        "callback",
        "context",
        "delivered",
        "done",
        "entered",
        "entry",
        "expired",
        "forced",
        "gate",
        "interrupt",
        "labels",
        "limit",
        "limits",
        "loop",
        "mode",
        "plain_sync",
        "reason",
        "refused",
        "registered",
        "replies",
        "revoked",
        "shields",
        "stopping",
        "thread",
        "turn",
    )

    def __init__(
        self,
        task_id: str,
        task_name: str,
        worker_id: str,
        mode: CancelMode = "edge",
        limits: lim.TimeLimits | None = None,
        expires_at: float | None = None,
        labels: tuple[tuple[str, str], ...] = (),
    ) -> None:
        run_id = f"{next(_run_ids):x}"  # unique within this worker, which is all it needs
        soft, hard = (limits.soft, limits.hard) if limits is not None else (None, None)
        self.entry = RunningEntry(
            task_id, task_name, run_id, time.time(), worker_id, soft, hard, expires_at, labels
        )
        self.mode = mode
        self.limits = limits
        self.limit: tuple[float, bool] | None = None  # (seconds, soft) of the limit that hit
        self._limit_timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # the worker's, for the timers
        self.expired = False  # refused at its start: past its ``expires`` deadline
        self.plain_sync = False  # a sync body without interrupt_threads: only its token stops it
        self.asked = False  # an aborter asked (not a time limit): it waits for our word
        self.body: Body | None = None  # the async body's driver, while it runs
        self.shields = 0  # open ``shield()`` sections: the cancel waits for them
        self.delivered = False  # the abort went to the body (or interrupted its thread)
        self.abort_requested = False  # the body is to be cancelled (now, or once unshielded)
        self.stopping = False  # aborted with a grace period: token set, cancel when it ends
        self.forced = False  # the grace period ran out with the body still running
        self._grace_timer: asyncio.TimerHandle | None = None
        self.interrupt = False  # AbortMiddleware(interrupt_threads=True): may interrupt a thread
        self.thread: ThreadInterrupt | None = None  # the sync body's thread, while it runs
        self.revoked = False  # an abort request existed when this attempt started
        self.labels: dict[str, Any] | None = None  # the message's, set by pre_execute
        self.refused: BaseException | None = None  # fail-closed: the registry was unreachable
        self.reason: str | None = None
        self.replies: list[str] = []  # the aborters' reply channels, for the confirmation
        self.entered = False
        self.registered = False
        # taskiq's callback task for this attempt: once it is done, the attempt is over, even
        # if post_save never came (taskiq skips it when storing the result fails).
        self.callback: asyncio.Task[Any] | None = None
        self.done = False
        self.context: Token[RunningTask | None] | None = None  # to reset ``current_run``
        self._event: threading.Event | None = None
        self._async_event: asyncio.Event | None = None
        self.gate: asyncio.Semaphore | None = None  # the worker's turns to report an abort
        self.turn = False  # holds one

    @property
    def task_id(self) -> str:
        return self.entry.task_id

    @property
    def aborted(self) -> bool:
        """An abort reached this attempt (what its token reports)."""
        return self.abort_requested or self.revoked or self.stopping

    @property
    def ending(self) -> bool:
        """The body is to stop: cancelled, or in an aborter's grace period. An error it raises
        now is how it stopped (its abort's result). Past a soft time limit it may run on: only
        what it raises through its token is the limit's; its own errors stay its own."""
        return self.abort_requested or (self.stopping and self.limit is None)

    @property
    def in_body(self) -> bool:
        """The task body is running (and can be cancelled or interrupted)."""
        return self.body is not None or self.thread is not None

    def request_abort(self, reason: str | None, grace: float = 0.0) -> bool:
        """Stop this attempt: now, or with ``grace``, once that many seconds have passed and
        the body has not stopped on its own (its token is set at once). ``True`` when this call
        is what aborted it; a later request can only bring the forced stop closer."""
        if not (self.done or self.revoked):
            self.asked = True
        return self._stop(reason, grace, by_limit=False)

    def _stop(self, reason: str | None, grace: float, by_limit: bool) -> bool:
        """``request_abort`` for an aborter or a time limit (``grace`` may be infinite: the
        token only)."""
        if self.done or self.revoked or self.abort_requested:
            return False
        if self.stopping:  # already in its grace period: keep the nearer deadline
            # (no timer: a soft time limit without a hard one, which never forces it)
            timer, due = self._grace_timer, asyncio.get_running_loop().time() + grace
            if grace < math.inf and (timer is None or timer.when() > due):
                if not by_limit and self.limit is not None:
                    # An aborter stops it before its hard limit would: the stop is theirs.
                    self.limit, self.reason = None, reason
                self._start_grace(grace, by_limit)
            return False
        self.reason = reason
        if grace > 0:
            self.stopping = True
            self._start_grace(grace, by_limit)
        else:
            self.abort_requested = True
            self.deliver()
        if self._event is not None:
            self._event.set()
        if self._async_event is not None:
            self._async_event.set()
        return True

    def _start_grace(self, grace: float, at_hard_limit: bool = False) -> None:
        self.end_grace()
        if grace <= 0:
            self.force(at_hard_limit)
        elif grace < math.inf:
            loop = asyncio.get_running_loop()
            self._grace_timer = loop.call_later(grace, self.force, at_hard_limit)

    # --- time limits -----------------------------------------------------------------
    def start_limits(self, started: float | None = None) -> None:
        """The body started (at ``started``, ``time.monotonic()``, else now): arm its first
        time limit. On the worker's loop (whose clock may be another, as uvloop's is)."""
        limits = self.limits
        if limits is None or self.done or self._limit_timer is not None:
            return
        first = limits.soft if limits.soft is not None else limits.hard
        assert first is not None
        if started is not None:
            first = max(0.0, first - (time.monotonic() - started))
        self._limit_timer = asyncio.get_running_loop().call_later(first, self._limit_reached)

    def start_limits_threadsafe(self) -> None:
        """``start_limits`` from a sync body's thread: counted from now, not from when the
        loop's thread gets to it (it may wait for the GIL)."""
        if self.limits is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.start_limits, time.monotonic())

    def _limit_reached(self) -> None:
        """The first limit: the soft one sets the token, and the grace period it starts runs
        until the hard one (or forever); a hard limit alone stops the body at once."""
        self._limit_timer = None
        limits = self.limits
        assert limits is not None
        first = not (self.done or self.aborted)  # the limit, not an abort, stops it
        if limits.soft is not None:
            grace = limits.hard - limits.soft if limits.hard is not None else math.inf
            self.limit = (limits.soft, True) if first else self.limit
            self._stop(lim.soft_reason(limits.soft), grace, by_limit=True)
        elif limits.hard is not None:
            self.limit = (limits.hard, False) if first else self.limit
            reason = lim.hard_reason(limits.hard)
            self._stop(reason + lim.TOKEN_ONLY if self.plain_sync else reason, 0.0, by_limit=True)

    def end_timers(self) -> None:
        """The attempt is over: no grace period or time limit may fire any more."""
        self.end_grace()
        if self._limit_timer is not None:
            self._limit_timer.cancel()
            self._limit_timer = None

    def error(self) -> TaskAbortedError:
        """What this attempt's abort is stored as: why it was stopped, by its class."""
        if self.expired:
            deadline = self.entry.expires_at or 0.0
            return TaskExpired(self.task_id, self.reason, deadline)
        if self.limit is not None:
            seconds, soft = self.limit
            return TaskTimeLimitExceeded(self.task_id, self.reason, seconds, soft)
        return TaskAbortedError(self.task_id, self.reason)

    def end_grace(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def force(self, at_hard_limit: bool = False) -> None:
        """The grace period is over (``at_hard_limit``: the one a soft time limit started):
        cancel the body if it is still running."""
        self._grace_timer = None
        if self.done or self.abort_requested:
            return
        # Also when the body is between two states we can see (a sync body whose thread is not
        # installed yet: ``_run_sync`` delivers once it is), or not started (``check`` refuses
        # it), or over (nothing reads the flag any more).
        self.forced = self.in_body
        self.abort_requested = True
        hard = self.limits.hard if self.limits is not None else None
        if at_hard_limit and self.limit is not None and hard is not None:  # soft, then hard
            self.limit = (hard, False)
            self.reason = f"{self.reason}; {lim.hard_reason(hard)}"
            if self.plain_sync:
                self.reason += lim.TOKEN_ONLY  # say why it may run on
        self.deliver()

    def deliver(self) -> None:
        """Cancel the body now, unless a shielded section is open (then at its end)."""
        if not self.abort_requested or self.shields:
            return
        if self.body is not None:  # also once more at a shield's end: it delivers what is due
            self.delivered = True
            self.body.request()
        elif self.thread is not None and not self.delivered:
            self.delivered = self.thread.interrupt()
        elif self.plain_sync and self.limit is not None and not self.delivered:
            self.delivered = True  # nothing to deliver to: say so, once
            logger.warning(
                "taskiq-abort: task %s (%s) passed its hard time limit but runs on: %s",
                self.task_id,
                self.entry.task_name,
                lim.TOKEN_ONLY.removeprefix("; "),
            )

    def no_retry(self) -> None:
        """The attempt ends aborted: retry middlewares must not run it again (unless a time
        limit stopped it and it opted in: ``retry_on_time_limit``). Their ``on_error`` reads
        this label, which is set before any ``on_error`` runs, so their place in
        ``broker.middlewares`` does not matter (nobody is moved)."""
        if self.labels is not None:
            if self.limit is not None and not self.asked and lim.retry_allowed(self.labels):
                return
            self.labels["retry_on_error"] = False

    async def take_turn(self) -> None:
        """The body ended aborted: wait for a turn to report it (taskiq's error path, the
        result write, the ack, our confirmation), at once unless many attempts are reporting.
        A bulk abort stops every body at once; reporting thousands of them at once would keep
        every one's objects alive across garbage collections, and full collections over a
        worker running thousands of tasks cost more than the reports themselves."""
        gate = self.gate
        if gate is not None and not self.turn:
            await gate.acquire()
            self.turn = True

    def end_turn(self) -> None:
        """The attempt is over (``WorkerSide.finish``): give its turn to the next."""
        if self.turn and self.gate is not None:
            self.turn = False
            self.gate.release()

    def revoke(self, reason: str | None, expired: bool = False) -> None:
        self.revoked, self.reason, self.expired = True, reason, expired

    def event(self) -> threading.Event:
        """Set once the task is aborted; a ``threading.Event`` so sync tasks can wait on it."""
        if self._event is None:
            self._event = threading.Event()
            if self.aborted:
                self._event.set()
        return self._event

    def async_event(self) -> asyncio.Event:
        """Set once the task is aborted; for async tasks (create it on the worker's loop)."""
        if self._async_event is None:
            self._async_event = asyncio.Event()
            if self.aborted:
                self._async_event.set()
        return self._async_event

    def check(self) -> None:
        """Raise if the body must not run (or run on)."""
        if self.aborted:
            raise self.error()
        if self.refused is not None:
            raise self.refused
