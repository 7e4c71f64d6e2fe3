"""The worker half: keeps the registry in step with what runs here and applies abort requests
sent to this worker's own channel.

Registry writes are batched: every start or finish that happens while a round trip is in flight
joins the next one, so a busy worker pays about one Redis call per batch, not per task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable

from taskiq_abort._wire.protocol import expired_reason
from taskiq_abort._worker.attempt import CancelMode, RunningTask
from taskiq_abort._worker.confirmations import Confirmations
from taskiq_abort._worker.limits import TimeLimits
from taskiq_abort.backends.base import AbortBackend, AbortNotice, Confirmation, NotDurableError
from taskiq_abort.errors import AbortPermissionError
from taskiq_abort.observability import events
from taskiq_abort.observability.outages import OUTAGES
from taskiq_abort.outcome import RunningEntry

logger = logging.getLogger("taskiq_abort")

_RECENT = 10_000  # finished ids remembered, to answer aborts that arrive just after the end
_MIN_INTERVAL = 0.005  # seconds between two registry calls of a busy worker
_FINISH_DELAY = 0.05  # finishes wait this long to ride along with a start batch (one call)
# Aborted attempts reporting at once (taskiq's error path, result, ack, confirmation): every
# body stops at once, the reports of a bulk abort go 32 at a time (RunningTask.take_turn).
# Unbounded, thousands of reports at once hold their frames alive together and the worker
# spends its time collecting garbage (benchmarks/bulk.py measures the rate).
_REPORTS = 32


def make_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class WorkerSide:
    """Per-process worker state; started by ``AbortMiddleware.startup()`` on workers."""

    def __init__(
        self,
        backend: AbortBackend,
        *,
        fail_closed: bool = False,
        cancel_mode: CancelMode = "edge",
        interrupt_threads: bool = False,
    ) -> None:
        self.backend = backend
        self.fail_closed = fail_closed
        self.cancel_mode: CancelMode = cancel_mode
        self.interrupt_threads = interrupt_threads
        self.worker_id = make_worker_id()
        self.loop: asyncio.AbstractEventLoop | None = None  # the event loop it runs on
        # Attempts running here, by task id: usually one, but a broker may redeliver a task that
        # is still running into the same process (JetStream after ``ack_wait``, a RabbitMQ
        # requeue); an abort must stop every copy.
        self.running: dict[str, list[RunningTask]] = {}
        self._ended: dict[str, list[RunningEntry]] = {}  # registered copies ended, others run on
        # A copy that ended was aborted (value: it was forced): the last copy confirms.
        self._owed: dict[str, bool] = {}
        # Ids that ended here lately: (outcome, forced), to answer aborts that come just after.
        self.recent: OrderedDict[str, tuple[str, bool]] = OrderedDict()
        self.info = {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "started": f"{time.time():.3f}",
        }
        self._starts: list[tuple[RunningTask, asyncio.Future[None]]] = []
        self._finishes: list[RunningEntry] = []
        self._flusher: asyncio.Task[None] | None = None
        self._finish_timer: asyncio.TimerHandle | None = None
        self._last_sync = float("-inf")
        self._last_batch = 0  # starts in the last registry call: more than one means load
        self._lock = asyncio.Lock()  # registry writes happen in order, one at a time
        self._dirty = True  # the registry in Redis may not match ours: rewrite it
        self._outage = False
        self._unreachable_since: float | None = None  # no master ran a start check since
        self._wake = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._confirmations = Confirmations(backend, self.worker_id)
        self._reports = asyncio.Semaphore(_REPORTS)

    # --- lifecycle -------------------------------------------------------------------
    async def start(self, ready_timeout: float = 3.0) -> None:
        self.loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(
                self.backend.listen(self.worker_id, self.on_abort, self._resync),
                name="abort-listen",
            ),
            asyncio.create_task(self._heartbeat_loop()),
        ]
        await self.backend.warm(replies=False)  # the first confirmation costs what others do
        # Aborts are live once the control channel is subscribed; don't hold up a worker whose
        # Redis is down, though: tasks run (fail open) and we catch up when it is back.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._ready.wait(), ready_timeout)

    async def stop(self, timeout: float = 2.0) -> None:
        if self._finish_timer is not None:
            self._finish_timer.cancel()
        tasks = [*self._tasks, *self._confirmations.tasks]
        if self._flusher is not None:
            tasks.append(self._flusher)
        for task in self._tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.backend.unregister(self.worker_id), timeout)

    # --- task path -------------------------------------------------------------------
    def begin(
        self,
        task_id: str,
        task_name: str,
        limits: TimeLimits | None = None,
        expires_at: float | None = None,
        labels: tuple[tuple[str, str], ...] = (),
    ) -> RunningTask:
        run = RunningTask(
            task_id, task_name, self.worker_id, self.cancel_mode, limits, expires_at, labels
        )
        run.interrupt = self.interrupt_threads
        run.gate, run.loop = self._reports, self.loop
        runs = self.running.setdefault(task_id, [])
        # A copy of an aborted task must not run either; a time limit ends one attempt only
        # (a retry it opted in to may start before that attempt has ended).
        if runs and (runs[0].asked or runs[0].revoked):
            run.revoke(runs[0].reason, runs[0].expired)
            run.replies.extend(runs[0].replies)
        runs.append(run)
        return run

    def attempts(self) -> list[RunningTask]:
        """Every attempt running here."""
        return [run for runs in self.running.values() for run in runs]

    async def admit(self, run: RunningTask) -> None:
        """Register the start; marks ``run`` revoked if an abort request was already stored."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._starts.append((run, fut))
        self._schedule()
        await fut

    def finish(self, run: RunningTask, outcome: str) -> bool:
        """Forget ``run``; ``True`` when an aborter is waiting for our confirmation."""
        if run.done:
            return False
        run.done = True
        run.end_turn()
        run.end_timers()
        asked = run.asked  # an aborter waits for our word (a time limit waits for nothing)
        runs = self.running.get(run.task_id, [])
        if run not in runs:  # not ours (a worker side replaced meanwhile): nothing to undo
            return False
        runs.remove(run)
        ended = self._ended.setdefault(run.task_id, [])
        if run.registered:
            ended.append(run.entry)
        if runs:
            # Another copy of this task runs on here: the registry keeps showing it (and the
            # holder index keeps routing aborts to us) until the last copy ends, and only the
            # last one confirms an abort, once every copy has stopped.
            if asked:
                self._owed[run.task_id] = self._owed.get(run.task_id, False) or run.forced
            return False
        del self.running[run.task_id]
        del self._ended[run.task_id]
        owed = run.task_id in self._owed
        run.forced = self._owed.pop(run.task_id, False) or run.forced  # any copy forced
        self.recent[run.task_id] = (outcome, run.forced and outcome == "aborted")
        self.recent.move_to_end(run.task_id)
        while len(self.recent) > _RECENT:
            self.recent.popitem(last=False)
        if ended:
            # Not urgent (`recent` answers aborts of it meanwhile): ride along with the next
            # start batch, or go on their own shortly; a busy worker pays one call, not two.
            # Every registered copy's entry goes: Redis drops the one whose run id it holds.
            self._finishes.extend(ended)
            self._arm_finish_timer()
        # Also for an attempt revoked at its start: a resync may have shown it as running to an
        # aborter now waiting for us (an aborter that saw no holder takes this as revoked).
        return asked or owed

    async def confirm(
        self, task_id: str, outcome: str, reply_to: Iterable[str], forced: bool = False
    ) -> None:
        """Record how an abort ended and reply to its aborters (``Confirmations``)."""
        await self._confirmations.confirm(Confirmation(task_id, outcome, tuple(reply_to), forced))

    # --- abort requests --------------------------------------------------------------
    def on_abort(self, notice: AbortNotice) -> None:
        runs = self.running.get(notice.task_id)
        if runs:
            for run in runs:  # every copy (a redelivered task may run here twice)
                if notice.reply_to and notice.reply_to not in run.replies:
                    run.replies.append(notice.reply_to)
                run.request_abort(notice.reason, notice.grace)
            return  # confirmed when the last copy ends, after its result is stored
        outcome, forced = self.recent.get(notice.task_id, ("", False))
        # It ended here a moment ago: say so, don't leave them waiting. Unless it ended without
        # a result ("unknown": a retry of it may be running elsewhere, whose worker answers).
        if outcome and outcome != "unknown":
            confirm = self.confirm(notice.task_id, outcome, (notice.reply_to,), forced)
            self._confirmations.track(asyncio.get_running_loop().create_task(confirm))

    # --- registry --------------------------------------------------------------------
    def _flush_finishes(self) -> None:
        self._finish_timer = None
        if self._finishes:
            self._schedule()

    def _arm_finish_timer(self) -> None:
        if self._finish_timer is None:
            self._finish_timer = asyncio.get_running_loop().call_later(
                _FINISH_DELAY, self._flush_finishes
            )

    def _schedule(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        first, pause = True, 0.0
        # Pending finishes join every start batch; on their own they go when their timer fires.
        while self._starts or (first and self._finishes):
            first = False
            if pause:
                await asyncio.sleep(pause)
            # Under load (the last batch carried several starts), at most one call per
            # _MIN_INTERVAL: starts arriving meanwhile join the next batch, so the bookkeeping
            # CPU stays bounded however fast tasks come. Tasks that come one at a time never
            # wait: a start whose predecessor went alone goes at once.
            if self._last_batch > 1:
                wait = self._last_sync + _MIN_INTERVAL - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            self._last_sync = loop.time()
            async with self._lock:
                starts, self._starts = self._starts, []
                self._last_batch = len(starts)
                finishes, self._finishes = self._finishes, []
                try:
                    alive, aborted = await self.backend.sync(
                        self.worker_id, [run.entry for run, _ in starts], finishes
                    )
                except Exception as exc:  # never let the registry stop task processing
                    self._unavailable(exc)
                    # Starts the master refused stay refused, durable or not: it had the
                    # request. The others are held and checked again, then run unregistered
                    # (fail open) or are refused.
                    notices = exc.notices if isinstance(exc, NotDurableError) else []
                    refused = {notice.task_id: notice for notice in notices}
                    unchecked = []
                    for run, fut in starts:
                        if run.task_id in refused:
                            notice = refused[run.task_id]
                            run.revoke(notice.reason, notice.expired)
                            if not fut.done():
                                fut.set_result(None)
                        else:
                            unchecked.append((run, fut))
                    if self._hold(loop.time()):
                        self._starts[:0], self._finishes[:0] = unchecked, finishes
                        pause = min(max(2 * pause, 0.05), 1.0)
                        continue
                    for run, fut in unchecked:
                        deadline = run.entry.expires_at
                        # Unchecked: its deadline on this worker's estimate of Redis's clock
                        late = 0.0 if deadline is None else events.redis_now_ms() / 1000 - deadline
                        if self.fail_closed:
                            run.refused = exc
                        elif late > 0:
                            run.revoke(expired_reason(late), expired=True)
                        if not fut.done():
                            fut.set_result(None)
                    continue
                self._unreachable_since, pause = None, 0.0
                revoked = {notice.task_id: notice for notice in aborted}
                for run, fut in starts:
                    if run.task_id in revoked:
                        run.revoke(revoked[run.task_id].reason, revoked[run.task_id].expired)
                    else:
                        run.registered = True
                    if not fut.done():
                        fut.set_result(None)
                if not alive:  # our registration is gone (Redis restarted?): rewrite it now
                    self._dirty = True
                    self._wake.set()
        if self._finishes:  # ended while we were busy (their timer may have found us so)
            self._arm_finish_timer()

    def _hold(self, now: float) -> bool:
        """Whether to hold starts no master could check durably, and ask again: for one
        lease after the registry became unreachable or stopped replicating (a failover is
        over by then, docs/deploy.md), so that a fail-open worker does not run, unchecked, a
        task revoked just before. A master whose writes fall short of its replicas may be a
        stale one, replaced by a failover while it still serves us: its "no request" is not
        the new master's, so those starts are held too (its refusals stand). Past one lease
        they run unregistered; fail-closed workers refuse them at once."""
        since = self._unreachable_since
        if self.fail_closed or since is None:
            return False
        return now - since < self.backend.lease

    async def _register_all(self) -> None:
        """Rewrite our whole registration; apply requests for anything we hold. Lock held."""
        runs = [run for run in self.attempts() if not run.done and not run.revoked]
        entries = [run.entry for run in runs]
        try:
            aborted = await self.backend.register(self.worker_id, self.info, entries)
        except NotDurableError as exc:  # on the master, not on its replicas: rewritten later
            for notice in exc.notices:
                self.on_abort(notice)
            raise
        for run in runs:
            run.registered = True
        self._dirty = False
        for notice in aborted:
            self.on_abort(notice)

    async def _resync(self) -> None:
        async with self._lock:
            try:
                await self._register_all()
            except NotDurableError as exc:  # subscribed, requests applied: keep listening
                self._unavailable(exc)
                self._ready.set()
                return
        self._recovered()
        self._ready.set()

    async def _heartbeat_loop(self) -> None:
        interval = max(self.backend.lease / 3, 0.05)
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            self._sweep()
            try:
                async with self._lock:
                    if self._dirty or not await self.backend.heartbeat(self.worker_id):
                        await self._register_all()
                self._recovered()
            except Exception as exc:
                self._unavailable(exc)

    def _sweep(self) -> None:
        """End attempts whose callback ended without ``post_save`` (taskiq skips it when
        storing the result fails), so that no ghost stays registered. Exact, not timed: a
        slow result write under load is not mistaken for a lost one."""
        for run in [r for r in self.attempts() if r.callback and r.callback.done()]:
            # No stored result to confirm: an aborter waiting for it gets "unconfirmed".
            self.finish(run, "unknown")

    def _unavailable(self, exc: BaseException) -> None:
        self._dirty = True
        if self._unreachable_since is None:
            self._unreachable_since = asyncio.get_running_loop().time()
        if not self._outage:
            self._outage = True
            events.registry_outage()
            OUTAGES.lost(
                self,
                logger,
                "taskiq-abort: abort registry unavailable (%s); tasks keep running%s until it "
                "is back",
                exc,
                " but new tasks are refused (fail_closed)" if self.fail_closed else "",
                # Refused tasks, or rights to grant: said even when a connection said it first.
                warn=self.fail_closed or isinstance(exc, AbortPermissionError),
            )

    def _recovered(self) -> None:
        self._unreachable_since = None
        if self._outage:
            self._outage = False
            OUTAGES.back(self, logger, "abort registry rewritten")
