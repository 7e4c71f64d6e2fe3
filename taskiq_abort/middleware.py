"""``AbortMiddleware``: the one object a user adds to a broker."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import inspect
import logging
import math
import sys
from collections.abc import Sequence
from typing import Any

from taskiq import AsyncBroker, InMemoryBroker, TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError

from taskiq_abort._aborter.calls import AbortCalls
from taskiq_abort._labels import CASCADE, index_names, stamp_parent
from taskiq_abort._labels import indexed as index_of
from taskiq_abort._wire.keys import DEFAULT_PREFIX
from taskiq_abort._worker.attempt import MESSAGE_ATTR, CancelMode, RunningTask, current_run
from taskiq_abort._worker.execution import release_frames, wrap_task_function
from taskiq_abort._worker.limits import (
    check_limits,
    deadline_of,
    delay_of,
    limits_of,
    optional_seconds,
    stamp_deadline,
)
from taskiq_abort._worker.side import WorkerSide
from taskiq_abort.backends.base import DEFAULT_LEASE, DEFAULT_REQUEST_TTL, AbortBackend
from taskiq_abort.backends.memory import MemoryAbortBackend
from taskiq_abort.backends.redis import RedisAbortBackend
from taskiq_abort.backends.redis.connect import check_options, keyword_options
from taskiq_abort.errors import (
    AbortBackendError,
    AbortConfigError,
    TaskAbortedError,
)
from taskiq_abort.handle import install_abortable_handles
from taskiq_abort.observability import events
from taskiq_abort.observability.logs import install_log_filter

logger = logging.getLogger("taskiq_abort")
# Closer than this to one of AbortMiddleware's own options, a keyword is a typo of it, not a
# redis-py option (no redis-py option comes that close: tests/test_config_errors.py checks).
TYPO_CUTOFF = 0.8
_PROCESS_POOL_FLAG = "--use-process-pool"


class AbortMiddleware(AbortCalls, TaskiqMiddleware):
    """Makes every task of a broker abortable, queued or running, from any process.

    >>> from taskiq import InMemoryBroker
    >>> broker = InMemoryBroker().with_middlewares(AbortMiddleware())  # in-process backend
    >>> AbortMiddleware("redis://localhost:6379/0", prefix="myapp").backend
    RedisAbortBackend('redis://localhost:6379/0', prefix='myapp')

    :param url: Redis URL of the control plane; without one (and without ``backend``) the
        in-process backend is used, for ``InMemoryBroker`` and tests.
    :param backend: an explicit :class:`~taskiq_abort.backends.AbortBackend`.
    :param prefix: key prefix, so that several apps can share one Redis.
    :param channel: namespace of the control channels (default ``ctl``: a worker listens on
        ``{<prefix>}:ctl:w:<worker id>``, an aborter on ``{<prefix>}:ctl:r:<aborter id>``).
    :param request_ttl: seconds an abort request is kept (default one day): how long a revoked
        queued task stays revoked; until it is due + ``request_ttl`` for a task kicked with a
        longer ``delay`` label.
    :param lease: seconds a crashed worker's running-task entries outlive it (default 10).
    :param abort_timeout: default seconds ``abort()`` waits for a worker's confirmation.
    :param fail_closed: refuse to start tasks while the registry is unreachable (default: run
        them, and log a warning once per outage).
    :param cancel_mode: ``"edge"`` (default): asyncio's semantics, one ``CancelledError`` at the
        current ``await``, after which ``finally`` blocks may ``await`` their clean-up.
        ``"level"``: anyio's, every ``await`` in the body stays cancelled (shield clean-up).
    :param interrupt_threads: also stop sync tasks that never look at their token: raise
        :class:`TaskInterrupted` in the thread running the body, at its next Python bytecode
        (not inside a blocking C call such as ``time.sleep()``, which it waits out); the stored
        result is ``TaskAbortedError``. It can land inside library code: see docs/usage.md for
        what that risks. Off by default.
    :param index_labels: names of the message labels that ``abort_where`` can match (e.g.
        ``("tenant",)``): written into the registry entry of each running task that carries
        them, and checked against the abort rules at its start. Declare the same on workers
        and aborters; tasks without them, and workers that declare none, pay nothing.
    :param redis_timeout: seconds a Redis call may take before Redis counts as unreachable
        (default 3).
    :param cluster: ``url`` is a node of a Redis Cluster (redis-py's ``RedisCluster``).
    :param sentinels: ``[(host, port), ...]`` of Redis Sentinels, instead of ``url``, with
        ``master_name`` and ``sentinel_kwargs``: the arguments of taskiq-redis's sentinel
        brokers.
    :param soft_time_limit: seconds from a task's start after which its token is set, for
        tasks without a ``soft_time_limit`` label (``@broker.task(soft_time_limit=...)`` or
        ``.kicker().with_labels(...)``); see README, "Time limits and expiry".
    :param time_limit: seconds from a task's start after which it is cancelled (its thread
        interrupted with ``interrupt_threads``), for tasks without a ``time_limit`` label.
    :param replicas: the most replicas that must acknowledge a task start or a revoke
        (``WAIT``) so that a failover cannot lose it; fewer when the master has fewer (none
        after its replica was promoted): default 1 on Cluster and Sentinel, 0 on one Redis.
    :param connection_kwargs: passed on to redis-py (``ssl_ca_certs``, ``username``...); an
        option redis-py does not know raises :class:`AbortConfigError` here.

    ``prefix``, ``channel``, ``request_ttl``, ``lease``, ``redis_timeout``, the topology and
    the redis-py options configure the backend built from ``url``; with ``backend=``,
    configure that instead. See docs/deploy.md for Cluster and Sentinel.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        backend: AbortBackend | None = None,
        prefix: str = DEFAULT_PREFIX,
        channel: str | None = None,
        request_ttl: float = DEFAULT_REQUEST_TTL,
        lease: float = DEFAULT_LEASE,
        abort_timeout: float = 5.0,
        fail_closed: bool = False,
        cancel_mode: CancelMode = "edge",
        interrupt_threads: bool = False,
        soft_time_limit: float | None = None,
        time_limit: float | None = None,
        index_labels: Sequence[str] = (),
        redis_timeout: float = 3.0,
        cluster: bool = False,
        sentinels: Sequence[tuple[str, int]] | None = None,
        master_name: str | None = None,
        sentinel_kwargs: dict[str, Any] | None = None,
        replicas: int | None = None,
        **connection_kwargs: Any,
    ) -> None:
        super().__init__()
        _refuse_misspelt_options(connection_kwargs)
        for option, seconds in (
            ("request_ttl", request_ttl),
            ("lease", lease),
            ("redis_timeout", redis_timeout),
        ):
            if not (isinstance(seconds, (int, float)) and 0 < seconds < math.inf):
                raise ValueError(
                    f"AbortMiddleware({option}={seconds!r}): must be a positive number of seconds"
                )
        topology: tuple[object, ...] = (cluster, sentinels, master_name, sentinel_kwargs, replicas)
        if backend is not None:
            ignored: tuple[object, ...] = (
                prefix, channel, request_ttl, lease, redis_timeout, connection_kwargs
            )  # fmt: skip
            defaults: tuple[object, ...] = (
                DEFAULT_PREFIX,
                None,
                DEFAULT_REQUEST_TTL,
                DEFAULT_LEASE,
                3.0,
                {},
            )
            if (
                url is not None
                or ignored != defaults
                or topology != (False, None, None, None, None)
            ):
                raise ValueError(
                    "with backend=..., configure that backend (prefix, lease, URL...) "
                    "instead of passing those options to AbortMiddleware"
                )
        elif url is None and not sentinels:
            extra = sorted({*connection_kwargs, *(["cluster"] if cluster else [])})
            if extra:
                raise AbortConfigError(
                    "AbortMiddleware without a url (or sentinels=) uses the in-process backend, "
                    f"which takes no Redis options: got {extra}"
                )
            backend = MemoryAbortBackend(request_ttl=request_ttl, lease=lease)
        else:
            check_options(connection_kwargs, cluster, known=own_options())
            backend = RedisAbortBackend(
                url,
                prefix=prefix,
                channel=channel,
                request_ttl=request_ttl,
                lease=lease,
                timeout=redis_timeout,
                cluster=cluster,
                sentinels=sentinels,
                master_name=master_name,
                sentinel_kwargs=sentinel_kwargs,
                replicas=replicas,
                **connection_kwargs,
            )
        self.backend = backend
        self.abort_timeout = abort_timeout
        self.fail_closed = fail_closed
        if cancel_mode not in ("edge", "level"):
            raise ValueError(f"cancel_mode must be 'edge' or 'level', not {cancel_mode!r}")
        self.cancel_mode: CancelMode = cancel_mode
        self.interrupt_threads = interrupt_threads
        self.time_limits = check_limits(
            optional_seconds(soft_time_limit, "AbortMiddleware(soft_time_limit)"),
            optional_seconds(time_limit, "AbortMiddleware(time_limit)"),
            "AbortMiddleware",
        )
        self.index_labels = index_names(index_labels)
        self._indexed = (*self.index_labels, *CASCADE)
        self.worker: WorkerSide | None = None
        self._worker_starting: asyncio.Lock | None = None
        self._starting_loop: asyncio.AbstractEventLoop | None = None
        self._wrapped: set[str] = set()

    def __repr__(self) -> str:
        return f"AbortMiddleware({self.backend!r})"

    # --- taskiq hooks ----------------------------------------------------------------
    def set_broker(self, broker: AsyncBroker) -> None:
        super().set_broker(broker)
        install_abortable_handles(broker)

    def _is_worker(self) -> bool:
        return self.broker is not None and (
            self.broker.is_worker_process or isinstance(self.broker, InMemoryBroker)
        )

    async def startup(self) -> None:
        await self._check_backend()
        if self._is_worker():
            await self._ensure_worker()
        else:  # a client: make the first abort() cost what the others do
            await self.backend.warm()

    async def _check_backend(self) -> None:
        """A server of the wrong kind (a Cluster without ``cluster=True``, a wrong master name)
        fails start-up with :class:`AbortConfigError`; an unreachable one does not (tasks run,
        and the worker catches up when it is back)."""
        try:
            await self.backend.check()
        except AbortBackendError as exc:
            logger.warning("taskiq-abort: could not check the abort backend at start-up: %s", exc)

    async def shutdown(self) -> None:
        worker = self.worker
        if worker is not None:
            if worker.loop is asyncio.get_running_loop():
                self.worker = None
                await worker.stop()
            else:
                await self._drop_stale_worker(worker)
        await self.backend.close()

    async def _ensure_worker(self) -> WorkerSide:
        loop = asyncio.get_running_loop()
        if self.worker is not None:
            if self.worker.loop is loop:
                return self.worker
            await self._drop_stale_worker(self.worker)
        if self._worker_starting is None or self._starting_loop is not loop:
            self._worker_starting, self._starting_loop = asyncio.Lock(), loop
        async with self._worker_starting:
            if self.worker is None:
                assert self.broker is not None
                for name in self.broker.get_all_tasks():
                    self._wrap(name)
                install_log_filter()
                worker = WorkerSide(
                    self.backend,
                    fail_closed=self.fail_closed,
                    cancel_mode=self.cancel_mode,
                    interrupt_threads=self.interrupt_threads,
                )
                await worker.start()
                self.worker = worker
        return self.worker

    async def _drop_stale_worker(self, stale: WorkerSide) -> None:
        """The worker side was started on an event loop that has since ended (``asyncio.run``
        per test, pytest's loop per test, a module-level ``InMemoryBroker`` never shut down):
        its listener and heartbeat died with that loop. Start afresh on this one, and take the
        old registration out now rather than when its lease runs out."""
        if self.worker is not stale:
            return
        self.worker = None
        logger.debug("taskiq-abort: worker side restarted on a new event loop")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.backend.unregister(stale.worker_id), self.abort_timeout)

    async def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        parent = current_run.get()
        if parent is not None and parent.task_id != message.task_id:  # a child task
            stamp_parent(message.labels, parent.task_id, parent.labels)
        try:
            stamp_deadline(message.labels, events.redis_now_ms() / 1000)
        except ValueError as exc:
            if parent is None or parent.task_id != message.task_id:  # the kicker's own mistake
                raise ValueError(f"task {message.task_id} ({message.task_name}): {exc}") from None
            # A worker kicking again what it received (a retry middleware's kick, in on_error):
            # its labels came from elsewhere, and raising here would lose the task's result.
            logger.warning("taskiq-abort: task %s: %s; ignored", message.task_id, exc)
        delay = delay_of(message.labels)
        if delay is not None and delay > self.backend.request_ttl:
            # An abort request lives request_ttl: one made now would be gone before the task
            # arrives. Note its ETA, so that requests for it are kept until then.
            try:
                await self.backend.note_eta(message.task_id, delay)
            except AbortBackendError as exc:  # never stop a kick: abort() says what is wrong
                logger.warning(
                    "taskiq-abort: could not note when delayed task %s is due (%s): an abort "
                    "of it is kept only request_ttl",
                    message.task_id,
                    exc,
                )
        return message

    async def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        worker = self.worker
        if worker is None or worker.loop is not asyncio.get_running_loop():
            worker = await self._ensure_worker()
        if message.task_name not in self._wrapped:  # a task registered after start-up
            self._wrap(message.task_name)
        labels = message.labels
        try:
            limits = limits_of(labels, self.time_limits)
        except ValueError as exc:  # kicked by a process without AbortMiddleware to check it
            logger.warning("taskiq-abort: task %s: %s; the defaults apply", message.task_id, exc)
            limits = self.time_limits
        indexed = index_of(labels, self._indexed)
        run = worker.begin(message.task_id, message.task_name, limits, deadline_of(labels), indexed)
        object.__setattr__(message, MESSAGE_ATTR, run)
        run.labels = message.labels
        run.context = current_run.set(run)
        run.callback = asyncio.current_task()
        await worker.admit(run)
        return message

    def _wrap(self, task_name: str) -> None:
        task = self.broker.find_task(task_name) if self.broker else None
        if task is None:
            return
        self._wrapped.add(task_name)
        # `taskiq worker --use-process-pool` pickles a sync task's function to run it in another
        # process, by reference to the module attribute taskiq sets: a wrapper would not pickle.
        # Such tasks run unwrapped (no start check; a token pickles to a detached one: the child
        # has no attempt).
        if _PROCESS_POOL_FLAG in sys.argv and not inspect.iscoroutinefunction(task.original_func):
            return
        task.original_func = wrap_task_function(task.original_func)

    async def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        if isinstance(exception, TaskAbortedError):
            run: RunningTask | None = getattr(message, MESSAGE_ATTR, None)
            if run is not None:
                run.no_retry()  # never retry an aborted task (but see retry_on_time_limit)
            else:
                message.labels["retry_on_error"] = False
            phase = events.phase_of(exception, run is not None and run.revoked)
            await events.abort_applied(
                message.task_id, message.task_name, phase, exception.reason, message, self.broker
            )

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        run: RunningTask | None = getattr(message, MESSAGE_ATTR, None)
        if run is None or self.worker is None:
            return
        if run.context is not None:
            with contextlib.suppress(ValueError):  # set in another context (can't happen)
                current_run.reset(run.context)
            run.context = None
        if isinstance(result.error, NoResultError):  # nothing will be saved: end it here
            # Not "finished": a retry middleware reports a failed attempt this way while it
            # kicks the next one (same id). An aborter told "finished" would drop its request
            # and the retry would run; "unknown" makes it revoke the id instead.
            self.worker.finish(run, "unknown")

    async def post_save(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        run: RunningTask | None = getattr(message, MESSAGE_ATTR, None)
        if run is None or self.worker is None:
            return
        outcome = "aborted" if isinstance(result.error, TaskAbortedError) else "finished"
        if outcome == "aborted" and run.forced:  # this attempt's grace ran out: it was cancelled
            events.abort_forced(message.task_name)
        if self.worker.finish(run, outcome):
            forced = run.forced and outcome == "aborted"
            await self.worker.confirm(run.task_id, outcome, run.replies, forced)
        if outcome == "aborted":  # its tracebacks have served: free its frames now
            release_frames(result.error)


def own_options() -> list[str]:
    """The keyword options of :class:`AbortMiddleware` itself (the rest go to redis-py)."""
    return keyword_options(AbortMiddleware)


def _refuse_misspelt_options(options: dict[str, Any]) -> None:
    """A misspelt option of ours is named as such, with or without a URL (never passed on to
    redis-py, nor called a Redis option)."""
    for name in options:
        close = difflib.get_close_matches(name, own_options(), n=1, cutoff=TYPO_CUTOFF)
        if close:
            raise AbortConfigError(
                f"AbortMiddleware got an unknown option {name!r} (did you mean {close[0]!r}?)"
            )
