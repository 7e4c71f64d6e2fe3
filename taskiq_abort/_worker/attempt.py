"""One attempt of one task on this worker (:class:`RunningTask`), from ``pre_execute`` to
``post_save``: what the abort, its grace period and the body's stop need to know of it."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from contextvars import ContextVar, Token
from typing import Any, Literal

from taskiq_abort._worker.body import Body
from taskiq_abort._worker.threads import ThreadInterrupt
from taskiq_abort.errors import TaskAbortedError
from taskiq_abort.outcome import RunningEntry

CancelMode = Literal["edge", "level"]

MESSAGE_ATTR = "_taskiq_abort_run"
"""Attribute the middleware attaches to a ``TaskiqMessage`` (not a field: never serialized)."""

current_run: ContextVar[RunningTask | None] = ContextVar("taskiq_abort_run", default=None)
_run_ids = itertools.count(1)


class RunningTask:
    """One attempt of one task on this worker, from ``pre_execute`` to ``post_save``."""

    __slots__ = (
        "_async_event",
        "_event",
        "_grace_timer",
        "abort_requested",
        "body",
        "callback",
        "context",
        "delivered",
        "done",
        "entered",
        "entry",
        "forced",
        "gate",
        "interrupt",
        "labels",
        "mode",
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
        self, task_id: str, task_name: str, worker_id: str, mode: CancelMode = "edge"
    ) -> None:
        run_id = f"{next(_run_ids):x}"  # unique within this worker, which is all it needs
        self.entry = RunningEntry(task_id, task_name, run_id, time.time(), worker_id)
        self.mode = mode
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
    def in_body(self) -> bool:
        """The task body is running (and can be cancelled or interrupted)."""
        return self.body is not None or self.thread is not None

    def request_abort(self, reason: str | None, grace: float = 0.0) -> bool:
        """Stop this attempt: now, or with ``grace``, once that many seconds have passed and
        the body has not stopped on its own (its token is set at once). ``True`` when this call
        is what aborted it; a later request can only bring the forced stop closer."""
        if self.done or self.revoked or self.abort_requested:
            return False
        if self.stopping:  # already in its grace period: keep the nearer deadline
            timer = self._grace_timer
            if timer is not None and timer.when() > asyncio.get_running_loop().time() + grace:
                self._start_grace(grace)
            return False
        self.reason = reason
        if grace > 0:
            self.stopping = True
            self._start_grace(grace)
        else:
            self.abort_requested = True
            self.deliver()
        if self._event is not None:
            self._event.set()
        if self._async_event is not None:
            self._async_event.set()
        return True

    def _start_grace(self, grace: float) -> None:
        self.end_grace()
        if grace <= 0:
            self.force()
        else:
            self._grace_timer = asyncio.get_running_loop().call_later(grace, self.force)

    def end_grace(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None

    def force(self) -> None:
        """The grace period is over: cancel the body if it is still running."""
        self._grace_timer = None
        if self.done or self.abort_requested:
            return
        # Also when the body is between two states we can see (a sync body whose thread is not
        # installed yet: ``_run_sync`` delivers once it is), or not started (``check`` refuses
        # it), or over (nothing reads the flag any more).
        self.forced = self.in_body
        self.abort_requested = True
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

    def no_retry(self) -> None:
        """The attempt ends aborted: retry middlewares must not run it again. Their
        ``on_error`` reads this label, which is set before any ``on_error`` runs, so their
        place in ``broker.middlewares`` does not matter (nobody is moved)."""
        if self.labels is not None:
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

    def revoke(self, reason: str | None) -> None:
        self.revoked, self.reason = True, reason

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
            raise TaskAbortedError(self.task_id, self.reason)
        if self.refused is not None:
            raise self.refused
