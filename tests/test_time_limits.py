"""Time limits (``soft_time_limit``, ``time_limit``) and expiry (``expires``): in-process, and
on real ``taskiq worker`` processes (async and sync bodies, retries, a parked queue, a worker
whose clock is wrong)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from taskiq import AsyncBroker, Context, InMemoryBroker, TaskiqDepends
from taskiq.middlewares import SimpleRetryMiddleware

from taskiq_abort import (
    AbortMiddleware,
    AbortStatus,
    AbortToken,
    TaskAbortedError,
    TaskExpired,
    TaskTimeLimitExceeded,
    abort,
)
from taskiq_abort._worker.limits import TimeLimits, limits_of
from taskiq_abort.observability import events as hub
from tests.app import make_broker
from tests.conftest import Events, WorkerProcess
from tests.faultkit import wait_log
from tests.test_cli import cli, json_lines

pytestmark = pytest.mark.anyio


class Phases(hub.Observer):
    """The phases applied aborts are reported under (what the metrics count)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def abort_applied(self, event: hub.AbortApplied) -> None:
        self.seen.append((event.task_id, event.phase))


# --- in-process -----------------------------------------------------------------------
@pytest.fixture
async def local() -> AsyncIterator[tuple[AsyncBroker, dict[str, Any]]]:
    broker = InMemoryBroker(sync_tasks_pool_size=2).with_middlewares(
        SimpleRetryMiddleware(default_retry_count=2),
        AbortMiddleware(interrupt_threads=True, time_limit=30),
    )
    seen: dict[str, Any] = {"log": [], "runs": 0, "started": asyncio.Event()}

    @broker.task(task_name="sleeper")
    async def sleeper(seconds: float = 60) -> str:
        seen["runs"] += 1
        seen["started"].set()
        try:
            await asyncio.sleep(seconds)
        finally:
            seen["log"].append("finally")
        return "slept"

    @broker.task(task_name="polite")
    async def polite(mode: str, token: AbortToken = TaskiqDepends()) -> str:
        try:
            await token.wait()
        finally:
            seen["log"].append(f"token: {token.reason}")
        if mode == "raise":
            token.raise_if_aborted()
        return "stopped on its own"

    @broker.task(task_name="spin")
    def spin(seconds: float) -> str:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        return "spun"

    @broker.task(task_name="retried", retry_on_error=True, max_retries=2)
    async def retried() -> str:
        seen["runs"] += 1
        await asyncio.sleep(60)
        return "unreachable"

    await broker.startup()
    yield broker, seen
    await broker.shutdown()


@pytest.fixture
async def plain() -> AsyncIterator[AsyncBroker]:
    """An in-process broker with AbortMiddleware's defaults and one task, ``quick``."""
    broker = InMemoryBroker().with_middlewares(AbortMiddleware())

    @broker.task(task_name="quick")
    async def quick() -> str:
        return "ran"

    await broker.startup()
    yield broker
    await broker.shutdown()


async def _kick(broker: AsyncBroker, name: str, *args: Any, **labels: Any) -> Any:
    return await broker.find_task(name).kicker().with_labels(**labels).kiq(*args)  # type: ignore[union-attr]


async def _result(broker: AsyncBroker, name: str, *args: Any, **labels: Any) -> Any:
    task = await broker.find_task(name).kicker().with_labels(**labels).kiq(*args)  # type: ignore[union-attr]
    return await task.wait_result(timeout=10)


async def test_hard_limit_stops_an_async_body_and_runs_its_finally(local: Any) -> None:
    broker, seen = local
    result = await _result(broker, "sleeper", time_limit=0.2)
    error = result.error
    assert isinstance(error, TaskTimeLimitExceeded) and isinstance(error, TaskAbortedError)
    assert (error.limit, error.soft) == (0.2, False)
    assert "hard time limit (0.2 s) exceeded" in str(error)
    assert seen["log"] == ["finally"]


async def test_soft_then_hard(local: Any) -> None:
    """Soft limit: the token is set; a body that stops through it is recorded as stopped at
    its soft limit. A body that ignores it is cancelled at the hard one."""
    broker, seen = local
    own = await _result(broker, "polite", "raise", soft_time_limit=0.1, time_limit=30)
    assert isinstance(own.error, TaskTimeLimitExceeded)
    assert (own.error.limit, own.error.soft) == (0.1, True)
    assert seen["log"] == ["token: soft time limit (0.1 s) exceeded"]
    forced = await _result(broker, "sleeper", soft_time_limit=0.1, time_limit=0.3)
    assert isinstance(forced.error, TaskTimeLimitExceeded)
    assert (forced.error.limit, forced.error.soft) == (0.3, False)
    assert forced.error.reason == (
        "soft time limit (0.1 s) exceeded; hard time limit (0.3 s) exceeded"
    )


async def test_soft_limit_alone_sets_the_token_only(local: Any) -> None:
    broker, _ = local
    # The middleware's 30 s default is the hard limit: the soft label comes first.
    result = await _result(broker, "polite", "return", soft_time_limit=0.1)
    assert result.return_value == "stopped on its own", result
    result = await _result(broker, "sleeper", 0.3, soft_time_limit=0.1)
    assert result.return_value == "slept"  # ignored the token, ran to its end


async def test_a_sync_body_is_interrupted_at_its_hard_limit(local: Any) -> None:
    broker, _ = local
    result = await _result(broker, "spin", 60, time_limit=0.2)
    assert isinstance(result.error, TaskTimeLimitExceeded), result
    after = await _result(broker, "spin", 0.0)  # its pool thread runs the next task
    assert after.return_value == "spun"


async def test_a_sync_body_without_interrupt_threads_is_told_and_warned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = InMemoryBroker().with_middlewares(AbortMiddleware())

    @broker.task(task_name="checker")
    def checker(token: AbortToken = TaskiqDepends()) -> str:
        token.wait_sync(30)
        token.raise_if_aborted()
        return "not aborted"

    await broker.startup()
    try:
        with caplog.at_level(logging.WARNING, logger="taskiq_abort"):
            result = await _result(broker, "checker", time_limit=0.2)
        assert isinstance(result.error, TaskTimeLimitExceeded), result
        assert "only be stopped through its token" in str(result.error.reason)
        assert any("passed its hard time limit" in r.getMessage() for r in caplog.records)
    finally:
        await broker.shutdown()


async def test_middleware_default_and_labels(local: Any) -> None:
    """The middleware's default applies to tasks without labels; a label wins."""
    broker = InMemoryBroker().with_middlewares(AbortMiddleware(time_limit=0.2))

    @broker.task(task_name="plain")
    async def plain() -> str:
        await asyncio.sleep(60)
        return "unreachable"

    @broker.task(task_name="decorated", time_limit=0.1)
    async def decorated() -> str:
        await asyncio.sleep(60)
        return "unreachable"

    await broker.startup()
    try:
        by_default = await _result(broker, "plain")
        assert by_default.error.limit == 0.2
        by_decorator = await _result(broker, "decorated")
        assert by_decorator.error.limit == 0.1
        by_kicker = await _result(broker, "decorated", time_limit=0.15)
        assert by_kicker.error.limit == 0.15
    finally:
        await broker.shutdown()


async def test_a_time_limit_is_not_retried_unless_the_task_opts_in(local: Any) -> None:
    broker, seen = local
    result = await _result(broker, "retried", time_limit=0.1)
    assert isinstance(result.error, TaskTimeLimitExceeded)
    assert seen["runs"] == 1
    seen["runs"] = 0
    result = await _result(broker, "retried", time_limit=0.1, retry_on_time_limit=True)
    assert isinstance(result.error, TaskTimeLimitExceeded)
    assert seen["runs"] == 2  # max_retries=2: SimpleRetryMiddleware counts every attempt


async def test_abort_past_the_soft_limit_forces_at_once(local: Any) -> None:
    broker, seen = local
    task = await broker.find_task("sleeper").kicker().with_labels(soft_time_limit=0.05).kiq()
    await seen["started"].wait()
    middleware = next(m for m in broker.middlewares if isinstance(m, AbortMiddleware))
    while not any(run.stopping for run in middleware.worker.attempts()):
        await asyncio.sleep(0.01)  # until the soft limit has set its token
    outcome = await abort(broker, task.task_id, reason="operator", timeout=5)
    assert (outcome.status, outcome.forced) == (AbortStatus.ABORTED, True), outcome
    result = await task.wait_result(timeout=5)
    # The abort stopped it, not a limit: the abort's error and reason.
    assert type(result.error) is TaskAbortedError and result.error.reason == "operator"


async def test_expired_tasks_never_run_and_are_counted(local: Any) -> None:
    broker, seen = local
    phases = Phases()
    hub.subscribe(phases)
    try:
        task = (
            await broker.find_task("sleeper")
            .kicker()
            .with_labels(expires_at=time.time() - 1)
            .kiq(0)
        )
        result = await task.wait_result(timeout=5)
        assert isinstance(result.error, TaskExpired), result
        assert result.error.reason.startswith("expired: not started by its deadline")
        assert seen["runs"] == 0
        limited = await broker.find_task("sleeper").kicker().with_labels(time_limit=0.05).kiq()
        await limited.wait_result(timeout=5)
    finally:
        hub.unsubscribe(phases)
    assert (task.task_id, "expired") in phases.seen
    assert (limited.task_id, "time_limit") in phases.seen


async def test_expires_becomes_a_deadline_at_the_kick_and_stays(local: Any) -> None:
    """``expires`` counts from the kick, not from a ``delay``; a retry keeps the deadline."""
    broker, _ = local
    kicked = time.time()
    task = await broker.find_task("sleeper").kicker().with_labels(expires=600, delay=5).kiq(0)
    result = await task.wait_result(timeout=5)
    deadline = float(result.labels["expires_at"])
    # Stamped on this process's estimate of the Redis clock (its own, corrected by heartbeats)
    assert kicked + 599 < deadline < time.time() + 601
    again = await broker.find_task("sleeper").kicker().with_labels(**result.labels).kiq(0)
    assert float((await again.wait_result(timeout=5)).labels["expires_at"]) == deadline


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ({"time_limit": -1}, "time_limit='-1': must be a positive number of seconds"),
        ({"soft_time_limit": "soon"}, "soft_time_limit='soon'"),
        ({"soft_time_limit": 5, "time_limit": 5}, "must be below time_limit"),
        ({"expires": 0}, "expires='0'"),
        ({"expires_at": "tomorrow"}, "expires_at='tomorrow'"),
    ],
)
async def test_bad_labels_fail_the_kick(local: Any, labels: dict[str, Any], words: str) -> None:
    broker, seen = local
    with pytest.raises(ValueError, match="sleeper") as info:
        await broker.find_task("sleeper").kicker().with_labels(**labels).kiq()
    assert words in str(info.value)
    assert seen["runs"] == 0


async def test_metrics_count_both_phases() -> None:
    """Prometheus, through AbortObservability: its own phases, and taskiq's ``timeout`` label
    keeps its own meaning (a TimeoutError, not ours)."""
    pytest.importorskip("prometheus_client")
    from prometheus_client import REGISTRY

    from taskiq_abort import AbortObservability

    broker = InMemoryBroker().with_middlewares(
        AbortMiddleware(), AbortObservability(tracing=False, progress=False)
    )

    @broker.task(task_name="metered")
    async def metered() -> str:
        await asyncio.sleep(60)
        return "unreachable"

    def count(phase: str) -> float:
        sample = REGISTRY.get_sample_value(
            "aborted_tasks_total", {"task_name": "metered", "phase": phase}
        )
        return sample or 0.0

    await broker.startup()
    try:
        before = {phase: count(phase) for phase in ("time_limit", "expired", "running")}
        await _result(broker, "metered", time_limit=0.05)
        await _result(broker, "metered", expires_at=time.time() - 1)
        timed_out = await _result(broker, "metered", timeout=0.05)  # taskiq's own
        assert not isinstance(timed_out.error, TaskAbortedError), timed_out
        assert count("time_limit") - before["time_limit"] == 1
        assert count("expired") - before["expired"] == 1
        assert count("running") == before["running"]
    finally:
        await broker.shutdown()


async def test_a_limit_racing_the_body_s_end_never_lies() -> None:
    """The hard limit fires as the body ends, hundreds of times, async and sync: either the
    body returned and its own result is stored, or it stopped where it was and the result is
    TaskTimeLimitExceeded; never both, never neither. An async body stops only at an await,
    so one that stopped never reached its last line; a sync body's thread is interrupted at any
    bytecode, so it may be stopped on its way out, past its last line but before it returned
    (as asyncio's ``Task.cancel()`` stops a body at its last await)."""
    broker = InMemoryBroker(sync_tasks_pool_size=1).with_middlewares(
        AbortMiddleware(interrupt_threads=True)
    )
    ended: set[str] = set()

    @broker.task(task_name="racer")
    async def racer(seconds: float, context: Context = TaskiqDepends()) -> str:
        await asyncio.sleep(seconds)
        ended.add(context.message.task_id)
        return "ended"

    @broker.task(task_name="sync_racer")
    def sync_racer(seconds: float, context: Context = TaskiqDepends()) -> str:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
        ended.add(context.message.task_id)
        return "ended"

    rounds = 200
    said: Counter[str] = Counter()
    await broker.startup()
    try:
        # A sync body's limit lands later: the loop's thread must get the GIL to fire it.
        for name, longest in (("racer", 0.012), ("sync_racer", 0.03)):
            for i in range(rounds):
                kicker = broker.find_task(name).kicker().with_labels(time_limit=0.01)  # type: ignore[union-attr]
                task = await kicker.kiq(random.uniform(0.008, longest))
                result = await task.wait_result(timeout=5, check_interval=0.001)
                if isinstance(result.error, TaskTimeLimitExceeded):
                    if name == "racer":
                        assert task.task_id not in ended, f"{name} round {i}: ran to its end"
                    said[f"{name} stopped"] += 1
                    said[f"{name} stopped on its way out"] += task.task_id in ended
                else:
                    assert result.return_value == "ended" and task.task_id in ended, result
                    said[f"{name} ended"] += 1
    finally:
        await broker.shutdown()
    print(f"\n{dict(said)}")
    assert sum(n for k, n in said.items() if "way out" not in k) == 2 * rounds
    assert all(
        said[f"{name} {end}"] for name in ("racer", "sync_racer") for end in ("stopped", "ended")
    ), said  # both sides of the race, async and sync


def test_labels_and_defaults() -> None:
    """A label beats the default for that limit; when it disagrees with the default's other
    limit, the hard limit stands; None means none."""
    default = TimeLimits(10, 60)
    assert limits_of({}, default) == default
    assert limits_of({"time_limit": "30"}, default) == TimeLimits(10, 30)
    assert limits_of({"soft_time_limit": "100"}, default) == TimeLimits(None, 60)
    assert limits_of({"time_limit": "5"}, default) == TimeLimits(None, 5)
    assert limits_of({"time_limit": "None", "soft_time_limit": "None"}, default) == default
    assert limits_of({"soft_time_limit": "100"}, None) == TimeLimits(100, None)


def test_bad_defaults_fail_at_once() -> None:
    with pytest.raises(ValueError, match="must be below time_limit"):
        AbortMiddleware(soft_time_limit=10, time_limit=5)
    with pytest.raises(ValueError, match="time_limit"):
        AbortMiddleware(time_limit=0)


async def _stored(broker: Any, task_id: str) -> bool:
    """Whether a result for ``task_id`` gets stored: in-process, the task runs in a task of
    the broker's, which this polls for (up to 2 s)."""
    for _ in range(100):
        if await broker.result_backend.is_result_ready(task_id):
            return True
        await asyncio.sleep(0.02)
    return False


async def _foreign_kick(broker: Any, name: str, **labels: Any) -> str:
    """As a client without AbortMiddleware would send it: no pre_send of ours."""
    message = broker.find_task(name).kicker().with_labels(**labels)._prepare_message()
    await broker.kick(broker.formatter.dumps(message))
    return message.task_id


async def test_an_error_long_after_the_soft_limit_is_the_body_s_own_and_is_retried() -> None:
    """Past a soft limit alone a body may run on: an error of its own (not through its token)
    is its result, and retry middlewares retry it."""
    broker = InMemoryBroker().with_middlewares(
        SimpleRetryMiddleware(default_retry_count=3), AbortMiddleware()
    )
    runs: list[int] = []

    @broker.task(task_name="flaky", retry_on_error=True, max_retries=3)
    async def flaky() -> str:
        runs.append(1)
        await asyncio.sleep(0.3)  # past its soft limit, ignoring the token (allowed)
        if len(runs) == 1:
            raise ConnectionError("transient")
        return "ok on retry"

    await broker.startup()
    try:
        task = await _kick(broker, "flaky", soft_time_limit=0.1)
        result = await task.wait_result(timeout=5)
    finally:
        await broker.shutdown()
    assert not isinstance(result.error, TaskTimeLimitExceeded), result.error
    assert result.return_value == "ok on retry" and len(runs) == 2


async def test_an_abort_past_the_soft_limit_is_the_abort_s() -> None:
    """soft 0.1 s, hard 10 s, abort() at ~0.3 s: the abort stopped it, not the hard limit; the
    stored error is the abort's, with its reason."""
    broker = InMemoryBroker().with_middlewares(AbortMiddleware())

    @broker.task(task_name="sleeper")
    async def sleeper() -> str:
        await asyncio.sleep(60)
        return "unreachable"

    await broker.startup()
    try:
        task = await _kick(broker, "sleeper", soft_time_limit=0.1, time_limit=10)
        await asyncio.sleep(0.3)  # past its soft limit, long before its hard one
        started = time.monotonic()
        await abort(broker, task.task_id, reason="operator", timeout=5)
        result = await task.wait_result(timeout=5)
        assert time.monotonic() - started < 5
    finally:
        await broker.shutdown()
    error = result.error
    assert "hard time limit" not in str(error.reason), error.reason
    assert not (isinstance(error, TaskTimeLimitExceeded) and error.limit == 10.0)


@pytest.mark.parametrize("label", ["expires", "time_limit", "soft_time_limit"])
async def test_a_none_label_does_not_fail_the_kick(plain: AsyncBroker, label: str) -> None:
    """``.with_labels(expires=None)`` / ``@broker.task(time_limit=None)`` mean "none" (taskiq
    turns label values into strings: None arrives as 'None')."""
    task = await _kick(plain, "quick", **{label: None})
    assert (await task.wait_result(timeout=5)).return_value == "ran"


async def test_a_label_the_worker_tolerated_does_not_break_the_retry_kick() -> None:
    """A client without AbortMiddleware sends a label we would refuse; the worker runs the
    task and its retry middleware kicks it again from the worker: that kick goes (a warning,
    not an error in the middle of another middleware's on_error), and a result is stored."""
    broker = InMemoryBroker().with_middlewares(
        SimpleRetryMiddleware(default_retry_count=3), AbortMiddleware()
    )
    runs: list[int] = []

    @broker.task(task_name="failing", retry_on_error=True)
    async def failing() -> str:
        runs.append(1)
        if len(runs) == 1:
            raise ConnectionError("transient")
        return "ok"

    await broker.startup()
    try:
        task_id = await _foreign_kick(broker, "failing", time_limit="soon")
        assert await _stored(broker, task_id), f"no result; runs={runs}"
    finally:
        await broker.shutdown()


@pytest.mark.parametrize("label", ["time_limit", "expires_at"])
async def test_a_huge_int_label_from_a_foreign_kicker_still_stores_a_result(
    plain: AsyncBroker, label: str
) -> None:
    """An int label beyond a float's range (OverflowError, not ValueError) is a bad label like
    any other: the task runs and its result is stored."""
    task_id = await _foreign_kick(plain, "quick", **{label: 10**400})
    assert await _stored(plain, task_id)


# --- real workers -----------------------------------------------------------------------
@pytest.fixture
def limit_worker(redis_url: str, prefix: str) -> Iterator[WorkerProcess]:
    """One worker with one pool thread: a sync body that kept it would block the next."""
    worker = WorkerProcess(
        redis_url,
        prefix,
        broker="list",
        env={"TASKIQ_ABORT_TEST_INTERRUPT": "1"},
        extra_args=("--max-threadpool-threads", "1"),
    )
    with worker:
        yield worker


async def test_worker_stops_an_async_task_at_its_limits(
    limit_worker: WorkerProcess, client_of: AsyncBroker, events: Events
) -> None:
    hard = await _kick(client_of, "sleeper", 60, time_limit=0.3)
    decorated = await _kick(client_of, "limited")
    polite = await _kick(client_of, "graceful", "raise", soft_time_limit=0.2, time_limit=30)
    ignorer = await _kick(client_of, "graceful", "ignore", soft_time_limit=0.2, time_limit=0.6)
    for task, limit, soft in ((hard, 0.3, False), (decorated, 0.5, False), (ignorer, 0.6, False)):
        result = await task.wait_result(timeout=15)
        assert isinstance(result.error, TaskTimeLimitExceeded), result
        assert (result.error.limit, result.error.soft) == (limit, soft)
    assert "finally" in events.all(hard.task_id)
    assert "finally" in events.all(decorated.task_id)
    # One INFO line, in place of taskiq's error line and traceback.
    line = f"taskiq-abort: stopped task {hard.task_id} (sleeper): hard time limit (0.3 s) exceeded"
    log = await asyncio.to_thread(wait_log, limit_worker, line)
    assert "TaskTimeLimitExceeded" not in log  # no traceback of it
    assert "cancelled, token set: True" in events.all(ignorer.task_id)
    result = await polite.wait_result(timeout=15)
    assert isinstance(result.error, TaskTimeLimitExceeded)
    assert (result.error.limit, result.error.soft) == (0.2, True)  # stopped on its own
    assert "token set" in events.all(polite.task_id)


async def test_worker_interrupts_a_sync_loop_and_its_thread_runs_the_next_task(
    limit_worker: WorkerProcess, client_of: AsyncBroker, events: Events
) -> None:
    spin = await _kick(client_of, "spin", time_limit=0.3)
    result = await spin.wait_result(timeout=15)
    assert isinstance(result.error, TaskTimeLimitExceeded), result
    thread = next(e for e in events.all(spin.task_id) if e.startswith("thread "))
    after = await (await _kick(client_of, "which_thread")).wait_result(timeout=15)
    assert f"thread {after.return_value}" == thread  # the one pool thread, free again


async def test_worker_never_retries_a_time_limit_unless_opted_in(
    limit_worker: WorkerProcess, client_of: AsyncBroker, events: Events
) -> None:
    plain = await _kick(client_of, "limited_retried")
    opted = await _kick(client_of, "limited_retried_opt_in")
    for task in (plain, opted):
        assert isinstance((await task.wait_result(timeout=30)).error, TaskTimeLimitExceeded)
    # A retry is kicked before the result is stored: one task kicked now comes after any.
    marker = await _kick(client_of, "quick", 1)
    await marker.wait_result(timeout=15)
    assert events.all(plain.task_id).count("started") == 1
    assert events.all(opted.task_id).count("started") == 2  # max_retries=2 attempts


def _redis_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def _wait_past(client: redis.Redis, deadline: float) -> None:
    """Until the Redis clock, which judges expiry, is past ``deadline``."""
    while _redis_time(client) <= deadline:
        time.sleep(0.05)  # polling the judging clock itself; no event marks its passing


@pytest.mark.parametrize("skew", [0, -60, 60], ids=["true-clock", "60s-slow", "60s-fast"])
async def test_expired_tasks_parked_until_after_their_deadline_never_run(
    redis_url: str, prefix: str, rclient: redis.Redis, events: Events, skew: int
) -> None:
    """Tasks wait on a queue no worker serves; then a worker comes, whose clock may be wrong
    by a minute: the expired one never runs, the other runs; the judging is Redis's clock."""
    queue = f"{prefix}:parked"
    client = make_broker(redis_url, prefix, "list", queue=queue)
    await client.startup()
    try:
        kicked = time.time()  # the client stamps the deadline on this machine's clock
        expiring = await _kick(client, "quick", 1, expires=0.5)
        lasting = await _kick(client, "quick", 2, expires=600)
        await asyncio.to_thread(_wait_past, rclient, kicked + 0.5 + 0.01)
        worker = WorkerProcess(
            redis_url,
            prefix,
            broker="list",
            env={"TASKIQ_ABORT_TEST_QUEUE": queue, "TASKIQ_ABORT_TEST_CLOCK_SKEW": str(skew)},
        )
        with worker:
            assert (await lasting.wait_result(timeout=15)).return_value == 4
            result = await expiring.wait_result(timeout=15)
        assert isinstance(result.error, TaskExpired), result
        assert "started" not in events.all(expiring.task_id)
    finally:
        await client.shutdown()


async def test_worker_default_limit_applies_to_tasks_without_labels(
    redis_url: str, prefix: str, client_of: AsyncBroker
) -> None:
    worker = WorkerProcess(
        redis_url, prefix, broker="list", env={"TASKIQ_ABORT_TEST_TIME_LIMIT": "0.4"}
    )
    with worker:
        task = await _kick(client_of, "sleeper", 60)
        result = await task.wait_result(timeout=15)
        labelled = await _kick(client_of, "sleeper", 60, time_limit=0.2)
        by_label = await labelled.wait_result(timeout=15)
    assert isinstance(result.error, TaskTimeLimitExceeded) and result.error.limit == 0.4
    assert isinstance(by_label.error, TaskTimeLimitExceeded) and by_label.error.limit == 0.2


async def test_a_retry_after_the_deadline_never_runs(
    limit_worker: WorkerProcess, client_of: AsyncBroker, events: Events
) -> None:
    """The first attempt starts in time and fails after the deadline; its retry (same labels,
    same deadline) is refused at its start."""
    task = await _kick(client_of, "chaos", 0.8, 1, expires=0.5)
    result = await task.wait_result(timeout=15)
    assert isinstance(result.error, TaskExpired), result
    assert [e for e in events.all(task.task_id) if e.startswith("started")] == ["started-0"]


async def test_ls_and_status_show_the_limits_and_the_time_left(
    limit_worker: WorkerProcess, client_of: AsyncBroker, events: Events
) -> None:
    task = await _kick(client_of, "sleeper", 600, soft_time_limit=300, time_limit=600)
    await asyncio.to_thread(events.wait, task.task_id, "started")
    where = ("--redis-url", limit_worker.url, "--prefix", limit_worker.prefix)
    listed = await asyncio.to_thread(cli, *where, "ls", "--json")
    (row,) = [r for r in json_lines(listed.stdout) if r["task_id"] == task.task_id]
    assert (row["soft_time_limit_s"], row["time_limit_s"]) == (300, 600)
    assert 0 < row["time_left_s"] <= 600
    table = await asyncio.to_thread(cli, *where, "ls")
    assert "LEFT" in table.stdout, table.stdout
    status = await asyncio.to_thread(cli, *where, "status", task.task_id)
    assert "time limit 10m00s (soft 5m00s)" in status.stdout, status.stdout
    assert (await abort(client_of, task, timeout=10)).status is AbortStatus.ABORTED
