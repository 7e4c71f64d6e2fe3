"""Documented promises that had no test of their own (issue 14), each checked against real
redis-server and ``taskiq worker`` processes the suite starts, so that each test fails when its
promise does not hold.

Time limits are lower bounds set by the option under test plus generous upper bounds (a
multiple of it, or the next larger failure mode), never tight wall-clock thresholds.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pickle
import signal
import threading
import time
import uuid
from types import ModuleType
from typing import Any

import anyio
import pytest
import redis
from taskiq import AsyncBroker, Context, InMemoryBroker, TaskiqDepends, TaskiqMessage
from taskiq.kicker import AsyncKicker
from taskiq.task import AsyncTaskiqTask

from taskiq_abort import (
    AbortableTask,
    AbortBackendUnavailableError,
    AbortMiddleware,
    AbortStatus,
    AbortToken,
    InvalidTaskIdError,
    TaskAbortedError,
    TaskiqAbortError,
    abort,
    find_middleware,
)
from taskiq_abort._wire.keys import KeySpace
from taskiq_abort.backends.memory import MemoryAbortBackend
from tests.app import make_broker
from tests.conftest import Events, WorkerProcess
from tests.faultkit import apoll, own_server, started

pytestmark = pytest.mark.anyio


def blpop(client: redis.Redis, key: str, timeout: float = 30.0) -> str:
    """BLPOP in slices below redis-py's default 5 s socket timeout; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        popped = client.blpop([key], timeout=min(left, 2.0))
        if popped is not None:
            return str(popped[1])
    raise TimeoutError(f"nothing pushed to {key} within {timeout} s")


# --- AbortToken under `taskiq worker --use-process-pool` ------------------------------------
@pytest.fixture
def pool_app(redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """``tests/pool_app.py`` (module-level tasks, as the process pool needs) on this test's
    Redis and prefix; it reads them from the environment when imported."""
    monkeypatch.setenv("TASKIQ_ABORT_TEST_URL", redis_url)
    monkeypatch.setenv("TASKIQ_ABORT_TEST_PREFIX", prefix)
    import tests.pool_app

    return importlib.reload(tests.pool_app)


def _pool_worker(worker_factory: type[WorkerProcess]) -> WorkerProcess:
    worker = worker_factory(extra_args=("--use-process-pool",))
    worker.args[worker.args.index("tests.app:broker")] = "tests.pool_app:broker"
    return worker.start()


async def test_readme_token_pattern_runs_under_a_process_pool(
    pool_app: ModuleType, worker_factory: type[WorkerProcess], rclient: redis.Redis, prefix: str
) -> None:
    """A sync task taking an AbortToken used to fail on every run under the process pool
    (``cannot pickle '_asyncio.Task'``): taskiq pickles its arguments, token included. The
    child gets a detached token that is never aborted, so the task runs to its end."""
    _pool_worker(worker_factory)
    async with started(pool_app.broker):
        task = await pool_app.crunch.kiq(3)
        result = await task.wait_result(timeout=30)
        assert (result.return_value, result.error) == (3, None)

        # Aborted while it runs in the child: unconfirmed, and it returns its own result.
        release = f"{prefix}:release"
        task = await pool_app.crunch.kiq(2, release)
        blpop(rclient, f"{release}:started")
        outcome = await task.abort(reason="stop", timeout=0.5)
        assert outcome.status is AbortStatus.UNCONFIRMED
        rclient.rpush(release, "go", "go")
        result = await task.wait_result(timeout=30)
        assert (result.return_value, result.error) == (2, None)


async def test_a_token_pickles_to_a_detached_token() -> None:
    """Unpickled: same task id, never aborted; a copy in-process still follows the attempt."""
    import copy

    broker = InMemoryBroker().with_middlewares(AbortMiddleware())
    entered, release = threading.Event(), threading.Event()
    seen: dict[str, Any] = {}

    @broker.task
    def holder(token: AbortToken = TaskiqDepends()) -> str:
        seen["copy"], seen["pickled"] = copy.copy(token), pickle.loads(pickle.dumps(token))
        entered.set()
        release.wait(30)
        token.wait_sync(30)  # the abort reached the attempt
        seen["states"] = (
            token.is_aborted,
            seen["copy"].is_aborted,
            seen["pickled"].is_aborted,
            seen["pickled"].reason,
        )
        return seen["pickled"].task_id  # type: ignore[no-any-return]

    await broker.startup()
    try:
        task = await holder.kiq()
        await asyncio.to_thread(entered.wait, 30)
        assert (await task.abort(reason="why", wait=False)).status is AbortStatus.UNCONFIRMED
        release.set()
        result = await task.wait_result(timeout=10)
        assert result.return_value == task.task_id
        assert seen["states"] == (True, True, False, None)
    finally:
        await broker.shutdown()


# --- AbortToken outside a worker, and its reason inside one ---------------------------------
async def test_token_outside_a_worker_is_never_aborted_and_waits_out_its_timeout() -> None:
    """On a broker without AbortMiddleware: ``is_aborted`` False, ``reason`` None,
    ``wait_sync(t)`` returns False after ``t`` (not at once), ``await wait()`` does not return."""
    broker = InMemoryBroker()  # no AbortMiddleware: no attempt to report on
    wait_for = 0.3

    @broker.task
    def sync_probe(token: AbortToken = TaskiqDepends()) -> tuple[Any, ...]:
        token.raise_if_aborted()  # never raises
        begin = time.monotonic()
        waited = token.wait_sync(wait_for)
        return (token.is_aborted, token.reason, waited, time.monotonic() - begin)

    @broker.task
    async def async_probe(token: AbortToken = TaskiqDepends()) -> tuple[Any, ...]:
        with anyio.move_on_after(wait_for) as scope:
            await token.wait()
        return (token.is_aborted, token.reason, scope.cancelled_caught)

    await broker.startup()
    try:
        aborted, reason, waited, elapsed = (
            await (await sync_probe.kiq()).wait_result(timeout=10)
        ).return_value
        assert (aborted, reason, waited) == (False, None, False)
        assert elapsed >= wait_for - 0.05, elapsed  # it waited, it did not return at once
        result = await (await async_probe.kiq()).wait_result(timeout=10)
        assert tuple(result.return_value) == (False, None, True)  # wait() was still waiting
    finally:
        await broker.shutdown()

    # A token built from a plain message (a test calling a task body with one) is the same.
    token = AbortToken(Context(TaskiqMessage(task_id="t", task_name="n", labels={}, args=[],
                                             kwargs={}), broker))  # fmt: skip
    assert (token.task_id, token.is_aborted, token.reason) == ("t", False, None)
    assert token.wait_sync(0.01) is False


async def test_token_reason_and_wait_inside_a_worker() -> None:
    """``token.reason`` is the abort's reason; ``await token.wait()`` in a child task the body
    started returns on the abort (the signal to stop)."""
    broker = InMemoryBroker().with_middlewares(AbortMiddleware())
    seen: dict[str, Any] = {}
    entered = asyncio.Event()

    @broker.task
    async def parent(token: AbortToken = TaskiqDepends()) -> str:
        async def child() -> None:
            await token.wait()
            seen["child"] = (token.is_aborted, token.reason)

        watcher = asyncio.create_task(child())
        entered.set()
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.wait_for(watcher, 10)
        return "unreachable"

    await broker.startup()
    try:
        task = await parent.kiq()
        await asyncio.wait_for(entered.wait(), 10)
        assert (await task.abort(reason="enough")).status is AbortStatus.ABORTED
        result = await task.wait_result(timeout=10)
        assert isinstance(result.error, TaskAbortedError) and result.error.reason == "enough"
        assert seen["child"] == (True, "enough")
    finally:
        await broker.shutdown()


# --- AbortableTask.of ---------------------------------------------------------------------------
async def test_abortable_task_of_a_plain_handle_aborts_a_running_task(
    client: AsyncBroker, worker_factory: type[WorkerProcess], events: Events
) -> None:
    worker_factory().start()
    plain = await AsyncKicker(task_name="sleeper", broker=client, labels={}).kiq(60)
    assert type(plain) is AsyncTaskiqTask  # taskiq's own handle, no .abort()
    events.wait(plain.task_id, "started")
    handle = AbortableTask.of(plain, client)
    assert isinstance(handle, AbortableTask) and handle.task_id == plain.task_id
    assert AbortableTask.of(handle, client) is handle
    outcome = await handle.abort(reason="converted")
    assert (outcome.status, outcome.reason) == (AbortStatus.ABORTED, "converted")
    events.wait(plain.task_id, "finally")
    result = await handle.wait_result(timeout=10)
    assert isinstance(result.error, TaskAbortedError) and result.error.reason == "converted"


# --- request_ttl --------------------------------------------------------------------------------
async def test_request_ttl_sets_when_a_revocation_expires(
    redis_url: str,
    prefix: str,
    client: AsyncBroker,
    worker_factory: type[WorkerProcess],
    events: Events,
    rclient: redis.Redis,
) -> None:
    """The request of a revoked task lives ``request_ttl`` seconds; after that the same task id
    starts again (a 1-day default would keep it revoked, a missing TTL forever)."""
    ttl = 2.0
    task_id = uuid.uuid4().hex
    async with started(make_broker(redis_url, prefix, request_ttl=ttl)) as aborter:
        outcome = await abort(aborter, task_id, reason="short-lived")
        assert outcome.status is AbortStatus.REVOKED
    key = KeySpace(prefix).request(task_id)
    pttl = rclient.pttl(key)
    assert 0 < pttl <= ttl * 1000, pttl
    worker_factory().start()
    await apoll(lambda: _gone(rclient, key), 10 * ttl, f"{key} to expire")
    task = await client.find_task("quick").kicker().with_task_id(task_id).kiq(21)
    events.wait(task_id, "started")  # a revoked task never runs its body
    assert await apoll(lambda: _return_value(task), 30, "its result") == 42


async def _gone(client: redis.Redis, key: str) -> bool:
    return not client.exists(key)


async def _return_value(task: Any) -> Any:
    result = await task.get_result() if await task.is_ready() else None
    if result is None or result.is_err:  # the revocation's stored TaskAbortedError, at first
        return None
    return result.return_value


# --- abort_timeout ------------------------------------------------------------------------------
async def test_abort_timeout_is_the_default_timeout_of_abort(
    redis_url: str,
    prefix: str,
    worker_factory: type[WorkerProcess],
    events: Events,
    rclient: redis.Redis,
) -> None:
    """``abort()`` without ``timeout`` waits ``abort_timeout`` for a confirmation that never
    comes (a sync task that ignores its token), not the 5 s default."""
    abort_timeout = 1.0
    worker_factory().start()
    release = f"{prefix}:release"
    async with started(make_broker(redis_url, prefix, abort_timeout=abort_timeout)) as broker:
        task = await broker.find_task("sync_ignorer").kiq(release)
        events.wait(task.task_id, "started")
        try:
            for outcome in (await task.abort(), await abort(broker, task.task_id)):
                assert outcome.status is AbortStatus.UNCONFIRMED
                assert abort_timeout - 0.05 <= outcome.elapsed < 4 * abort_timeout, outcome
        finally:
            rclient.rpush(release, "go")
        assert (await task.wait_result(timeout=30)).return_value == "ignored the abort"


# --- redis_timeout ------------------------------------------------------------------------------
async def test_redis_timeout_bounds_abort_against_a_hung_redis(redis_url: str, prefix: str) -> None:
    """A SIGSTOPped abort-plane Redis accepts connections and never answers: ``abort()`` raises
    AbortBackendUnavailableError after one ``redis_timeout`` (docs: about redis_timeout + 0.5 s),
    before a second one could have passed (a retry), and well before the 3 s default."""
    redis_timeout = 1.0
    with own_server() as plane:
        broker = make_broker(redis_url, prefix, abort_url=plane.url, redis_timeout=redis_timeout)
        async with started(broker):
            # Connected first (the script loaded, the reply channel subscribed): what is
            # measured is a call to a Redis that stopped answering.
            assert (await abort(broker, uuid.uuid4().hex)).status is AbortStatus.REVOKED
            assert plane.proc is not None
            os.kill(plane.proc.pid, signal.SIGSTOP)
            try:
                begin = time.monotonic()
                with pytest.raises(AbortBackendUnavailableError):
                    await abort(broker, uuid.uuid4().hex)
                elapsed = time.monotonic() - begin
            finally:
                os.kill(plane.proc.pid, signal.SIGCONT)
            assert redis_timeout - 0.05 <= elapsed < 2 * redis_timeout + 0.5, elapsed


# --- channel= -----------------------------------------------------------------------------------
async def test_a_custom_channel_is_the_one_used(
    redis_url: str,
    prefix: str,
    worker_factory: type[WorkerProcess],
    events: Events,
    rclient: redis.Redis,
) -> None:
    """With ``AbortMiddleware(channel=...)`` on both sides, the abort and its reply travel on
    channels of that namespace, and nothing on the default ``{P}:ctl:...``."""
    channel = "custom-ctl"
    namespace = KeySpace(prefix, channel).channel_prefix
    worker_factory(env={"TASKIQ_ABORT_TEST_CHANNEL": channel}).start()
    pubsub = rclient.pubsub()
    pubsub.psubscribe(f"{namespace}*", f"{KeySpace(prefix).channel_prefix}*")
    try:
        for _ in range(2):  # both subscriptions are in place before anything is sent
            assert _next_message(pubsub, "psubscribe") is not None
        async with started(make_broker(redis_url, prefix, channel=channel)) as broker:
            task = await broker.find_task("sleeper").kiq(60)
            events.wait(task.task_id, "started")
            assert (await task.abort(reason="custom")).status is AbortStatus.ABORTED
        seen: list[tuple[str, dict[str, Any]]] = []
        # Redis delivers in publish order: once the reply is here, the abort came before it.
        while not any(m.get("type") == "reply" for _, m in seen):
            message = _next_message(pubsub, "pmessage")
            assert message is not None, f"no reply on {namespace}*: {seen}"
            seen.append((message["channel"], json.loads(message["data"])))
    finally:
        pubsub.close()
    aborts = [(c, m) for c, m in seen if m.get("type") == "abort"]
    assert aborts and all(m["task_id"] == task.task_id for _, m in aborts), seen
    assert aborts[0][1]["reason"] == "custom"
    assert all(c.startswith(namespace) for c, _ in seen), seen  # none on the default ones


def _next_message(pubsub: Any, kind: str, timeout: float = 30.0) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        if message is not None and message["type"] == kind:
            return message  # type: ignore[no-any-return]
    return None


# --- SmartRetryMiddleware with AbortMiddleware placed first ----------------------------------
async def test_smart_retry_never_retries_an_abort_with_abort_middleware_first(
    redis_url: str,
    prefix: str,
    worker_factory: type[WorkerProcess],
    events: Events,
    rclient: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``with_middlewares(AbortMiddleware(...), SmartRetryMiddleware(...))``: the retry
    middleware's ``on_error`` would run last and kick the same id again; it must not."""
    env = {"TASKIQ_ABORT_TEST_RETRY": "smart", "TASKIQ_ABORT_TEST_ABORT_FIRST": "1"}
    worker_factory(env=env).start()
    monkeypatch.setenv("TASKIQ_ABORT_TEST_RETRY", "smart")  # the client's middlewares match
    async with started(make_broker(redis_url, prefix, abort_first=True)) as broker:
        task = await broker.find_task("flaky").kiq()
        events.wait(task.task_id, "started")
        assert (await task.abort()).status is AbortStatus.ABORTED
        assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)
    # A retry is a second message with the same id on the stream, and a second start.
    assert rclient.xlen(f"{prefix}:queue") == 1
    assert events.all(task.task_id).count("started") == 1


# --- which errors are which ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda: AbortMiddleware("redis://127.0.0.1:1/0", prefix="has space"), ValueError),
        (lambda: AbortMiddleware("http://127.0.0.1:1/0"), ValueError),
        (lambda: AbortMiddleware("redis://127.0.0.1:1/0", request_ttl=0), ValueError),
        (lambda: AbortMiddleware("redis://127.0.0.1:1/0", lease=-1), ValueError),
        (lambda: AbortMiddleware("redis://127.0.0.1:1/0", redis_timeout=0), ValueError),
        (lambda: AbortMiddleware(cancel_mode="soft"), ValueError),  # type: ignore[arg-type]
        (lambda: AbortMiddleware(backend=MemoryAbortBackend(), prefix="x"), ValueError),
    ],
    ids=["prefix", "url", "request_ttl", "lease", "redis_timeout", "cancel_mode", "backend"],
)
def test_argument_errors_are_builtin_errors(make: Any, kind: type[Exception]) -> None:
    """docs/options.md, "Errors": bad arguments are ValueError/TypeError, not TaskiqAbortError."""
    with pytest.raises(kind) as info:
        make()
    assert not isinstance(info.value, TaskiqAbortError)


async def test_abort_argument_errors_and_invalid_ids() -> None:
    """Nothing reaches a backend: the port below refuses, which would raise otherwise."""
    broker = InMemoryBroker().with_middlewares(AbortMiddleware("redis://127.0.0.1:1/0"))
    for kwargs, kind in (({"timeout": -1}, ValueError), ({"reason": 5}, TypeError)):
        with pytest.raises(kind) as info:
            await abort(broker, "some-task", **kwargs)
        assert not isinstance(info.value, TaskiqAbortError)
    with pytest.raises(InvalidTaskIdError) as bad_id:
        await abort(broker, "")
    assert isinstance(bad_id.value, TaskiqAbortError) and isinstance(bad_id.value, ValueError)
    with pytest.raises(AbortBackendUnavailableError):  # a run-time failure: TaskiqAbortError
        await abort(broker, "some-task")
    await find_middleware(broker).backend.close()
