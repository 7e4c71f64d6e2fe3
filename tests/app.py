"""The application the integration tests run in real ``taskiq worker`` processes.

Workers load ``tests.app:broker``, built from environment variables; a test builds its client
with :func:`make_broker` and the same settings. Tasks report what happens to them by pushing to
Redis lists, so tests wait on those events instead of sleeping.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

import anyio
import redis
import redis.asyncio as aredis
from taskiq import AsyncBroker, Context, TaskiqDepends, TaskiqMiddleware
from taskiq.middlewares import SimpleRetryMiddleware, SmartRetryMiddleware
from taskiq_redis import (
    ListQueueBroker,
    ListQueueClusterBroker,
    ListQueueSentinelBroker,
    RedisAsyncClusterResultBackend,
    RedisAsyncResultBackend,
    RedisAsyncSentinelResultBackend,
    RedisStreamBroker,
)

from taskiq_abort import AbortMiddleware, AbortToken, shield
from tests.stop_tasks import define_stop_tasks

_signals: dict[str, Any] = {}


def events_key(prefix: str, task_id: str) -> str:
    return f"{prefix}:test-events:{task_id}"


def events_url() -> str:
    """Where tasks report events: a standalone Redis, also when the app runs on a Cluster or
    Sentinel (``TASKIQ_ABORT_TEST_EVENTS_URL``), so that a failover cannot lose them."""
    return os.environ.get("TASKIQ_ABORT_TEST_EVENTS_URL") or os.environ["TASKIQ_ABORT_TEST_URL"]


def parse_target(url: str) -> tuple[str, str | None, list[tuple[str, int]], str | None]:
    """The test app's Redis: ``redis://...`` (one Redis), ``cluster://host:port`` (a Cluster,
    any node) or ``sentinel://host:port,host:port/master`` -> (kind, url, sentinels, master).

    >>> parse_target("sentinel://127.0.0.1:1,127.0.0.1:2/mymaster")
    ('sentinel', None, [('127.0.0.1', 1), ('127.0.0.1', 2)], 'mymaster')
    >>> parse_target("cluster://127.0.0.1:7000")
    ('cluster', 'redis://127.0.0.1:7000', [], None)
    """
    if url.startswith("sentinel://"):
        hosts, _, master = url.removeprefix("sentinel://").partition("/")
        pairs = [(h, int(port)) for h, _, port in (x.rpartition(":") for x in hosts.split(","))]
        return "sentinel", None, pairs, master
    if url.startswith(("cluster://", "clusters://")):
        scheme = "rediss" if url.startswith("clusters") else "redis"
        return "cluster", f"{scheme}://{url.split('://', 1)[1]}", [], None
    return "standalone", url, [], None


def sync_redis(url: str) -> redis.Redis | redis.RedisCluster:
    """A synchronous client of the test app's Redis, whatever its topology."""
    kind, plain, sentinels, master = parse_target(url)
    if kind == "cluster":
        return redis.RedisCluster.from_url(plain, decode_responses=True)
    if kind == "sentinel":
        assert master is not None
        sentinel = redis.Sentinel(sentinels)
        return sentinel.master_for(master, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


async def emit(context: Context, event: str) -> None:
    """Record an event (``started``, ``finally``...) for the test to wait on."""
    prefix = os.environ["TASKIQ_ABORT_TEST_PREFIX"]
    client = _signals.get("async")
    if client is None:
        client = _signals["async"] = aredis.Redis.from_url(events_url())
    # Shielded: after an abort, anyio cancels every await still inside the task's scope, so an
    # unshielded report from a ``finally`` block could be cancelled and lost.
    with anyio.CancelScope(shield=True):
        await client.rpush(events_key(prefix, context.message.task_id), f"{event} {time.time()}")


def marks() -> aredis.Redis:
    """One redis-py client whose pool every task of this worker shares, as apps do: its
    commands go through ``asyncio.wait_for``, which on Python 3.10/3.11 can swallow a
    cancellation that lands as the command completes."""
    client = _signals.get("marks")
    if client is None:
        client = _signals["marks"] = aredis.Redis.from_url(events_url())
    return client


def emit_sync(context: Context, event: str) -> None:
    prefix = os.environ["TASKIQ_ABORT_TEST_PREFIX"]
    client = _signals.get("sync")
    if client is None:
        client = _signals["sync"] = redis.Redis.from_url(events_url())
    client.rpush(events_key(prefix, context.message.task_id), f"{event} {time.time()}")


def make_broker(
    url: str,
    prefix: str,
    kind: str = "stream",
    abort_first: bool = False,
    lease: float = 10.0,
    *,
    abort_url: str | None = None,
    fail_closed: bool = False,
    idle_timeout_ms: int | None = None,
    queue: str | None = None,
    **abort_options: Any,
) -> AsyncBroker:
    """``abort_url``: a separate Redis for the abort control plane (fault and ACL tests);
    ``idle_timeout_ms``: how soon a stream message of a killed worker is redelivered;
    ``queue``: a queue of its own, to put tasks on one worker of several (``<prefix>:queue``);
    ``abort_options``: more ``AbortMiddleware`` options (``channel``, ``abort_timeout``...)."""
    queue = queue or f"{prefix}:queue"
    inner: AsyncBroker
    topology, plain, sentinels, master = parse_target(url)
    if topology != "standalone":
        options = {"lease": lease, "fail_closed": fail_closed, **abort_options}
        return _make_topology_broker(topology, plain, sentinels, master, prefix, queue, options)
    if kind == "stream":
        stream_kw: dict[str, Any] = {}
        if idle_timeout_ms is not None:  # and don't let a killed worker keep the claim lock
            stream_kw.update(idle_timeout=idle_timeout_ms, unacknowledged_lock_timeout=2.0)
        inner = RedisStreamBroker(
            url, queue_name=queue, consumer_group_name=f"{prefix}:group", **stream_kw
        )
    elif kind == "list":
        # socket_timeout=None: its BRPOP blocks without a timeout, which redis-py 8's default
        # 5 s socket timeout would turn into a worker crash and restart every 5 s when idle.
        inner = ListQueueBroker(url, queue_name=queue, socket_timeout=None)
    else:
        raise ValueError(kind)
    abort_mw = AbortMiddleware(
        abort_url or url,
        prefix=prefix,
        lease=lease,
        fail_closed=fail_closed,
        cancel_mode="level"
        if os.environ.get("TASKIQ_ABORT_TEST_CANCEL_MODE") == "level"
        else "edge",
        **abort_options,
    )
    retry: TaskiqMiddleware = SimpleRetryMiddleware(default_retry_count=3)
    if os.environ.get("TASKIQ_ABORT_TEST_RETRY") == "smart":
        retry = SmartRetryMiddleware(default_retry_count=3, default_delay=0, use_jitter=False)
    middlewares = [abort_mw, retry] if abort_first else [retry, abort_mw]
    broker = inner.with_result_backend(
        # A bounded pool: when thousands of tasks end at once (the load test), waiting for a
        # free connection beats opening thousands (redis-py connects them one at a time).
        RedisAsyncResultBackend(url, prefix_str=f"{prefix}:result", max_connection_pool_size=200)
    ).with_middlewares(*middlewares)
    _define_tasks(broker)
    return broker


def _make_topology_broker(
    topology: str,
    url: str | None,
    sentinels: list[tuple[str, int]],
    master: str | None,
    prefix: str,
    queue: str,
    abort_options: dict[str, Any],
) -> AsyncBroker:
    """The test app on a Redis Cluster or Sentinel: taskiq-redis's list brokers and result
    backends for those, and the control plane on the same deployment."""
    results = f"{prefix}:result"
    inner: AsyncBroker
    if topology == "cluster":
        assert url is not None
        tls = (
            {"ssl_ca_certs": os.environ["TASKIQ_ABORT_TEST_CA"]} if url.startswith("rediss") else {}
        )
        inner = ListQueueClusterBroker(url, queue_name=queue, socket_timeout=None, **tls)
        inner = inner.with_result_backend(
            RedisAsyncClusterResultBackend(url, prefix_str=results, **tls)
        )
        abort_mw = AbortMiddleware(url, cluster=True, prefix=prefix, **tls, **abort_options)
    else:
        assert master is not None
        inner = ListQueueSentinelBroker(sentinels, master, queue_name=queue, socket_timeout=None)
        inner = inner.with_result_backend(
            RedisAsyncSentinelResultBackend(sentinels, master, prefix_str=results)
        )
        abort_mw = AbortMiddleware(
            sentinels=sentinels, master_name=master, prefix=prefix, **abort_options
        )
    retry = SimpleRetryMiddleware(default_retry_count=3)
    broker = inner.with_middlewares(retry, abort_mw)
    _define_tasks(broker)
    return broker


def _define_tasks(broker: AsyncBroker) -> None:
    @broker.task(task_name="sleeper")
    async def sleeper(seconds: float, context: Context = TaskiqDepends()) -> str:
        try:
            # Inside the try: an abort that lands while this report is on its way (the test
            # saw it stored, its reply is not back yet) still runs the ``finally`` below.
            await emit(context, "started")
            await asyncio.sleep(seconds)
        finally:
            await emit(context, "finally")
        return "slept"

    @broker.task(task_name="marker")
    async def marker(tag: str, seconds: float = 3.0) -> str:
        """Issue 12's task: awaits a shared redis-py client first, then sleeps; its clean-up
        in ``finally`` awaits too (unshielded: edge mode lets it run)."""
        prefix = os.environ["TASKIQ_ABORT_TEST_PREFIX"]
        try:
            await marks().set(f"{prefix}:started:{tag}", 1)
            await asyncio.sleep(seconds)
            await marks().set(f"{prefix}:done:{tag}", 1)
        finally:
            await marks().set(f"{prefix}:cleanup:{tag}", 1)
        return "ran to the end"

    @broker.task(task_name="stubborn")
    async def stubborn(context: Context = TaskiqDepends()) -> str:
        """Catches the abort's CancelledError once and carries on."""
        await emit(context, "started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await emit(context, "swallowed")
        await asyncio.sleep(60)
        await emit(context, "ran-on")
        return "carried on"

    @broker.task(task_name="quick")
    async def quick(value: int, context: Context = TaskiqDepends()) -> int:
        await emit(context, "started")
        return value * 2

    @broker.task(task_name="swallower")
    async def swallower(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await emit(context, "swallowed")
        await asyncio.sleep(60)  # the abort is delivered again here
        return "returned after swallowing"

    @broker.task(task_name="shielded")
    async def shielded(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")
        async with shield():
            await emit(context, "in-shield")
            await asyncio.sleep(0.3)  # the "commit" an abort must not interrupt
            await emit(context, "committed")
        await asyncio.sleep(60)
        await emit(context, "after-shield")
        return "unreachable"

    @broker.task(task_name="sync_checker")
    def sync_checker(
        token: AbortToken = TaskiqDepends(), context: Context = TaskiqDepends()
    ) -> str:
        emit_sync(context, "started")
        token.wait_sync(60)
        token.raise_if_aborted()
        return "not aborted"

    @broker.task(task_name="sync_ignorer")
    def sync_ignorer(release_key: str, context: Context = TaskiqDepends()) -> str:
        emit_sync(context, "started")
        client = redis.Redis.from_url(events_url())
        client.blpop([release_key], timeout=60)  # ends when the test says so; never checks
        emit_sync(context, "finished")
        return "ignored the abort"

    @broker.task(task_name="flaky", retry_on_error=True, max_retries=3)
    async def flaky(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")
        await asyncio.sleep(60)
        raise RuntimeError("never reached")

    @broker.task(task_name="group_sleeper")
    async def group_sleeper(context: Context = TaskiqDepends()) -> str:
        await emit(context, "started")

        async def child(n: int) -> None:
            try:
                await asyncio.sleep(60)
            finally:
                await emit(context, f"child-finally-{n}")

        async with anyio.create_task_group() as tg:  # asyncio's needs Python 3.11
            tg.start_soon(child, 1)
            tg.start_soon(child, 2)
        return "unreachable"

    _define_fault_tasks(broker)
    _define_cli_tasks(broker)
    define_stop_tasks(broker)


def _define_cli_tasks(broker: AsyncBroker) -> None:
    """Tasks of the admin CLI tests (tests/test_cli.py)."""

    @broker.task(task_name="cli_blocker")
    def cli_blocker(release_key: str, context: Context = TaskiqDepends()) -> str:
        """A sync task that never checks its token: its abort stays unconfirmed."""
        emit_sync(context, "started")
        # socket_timeout=None: redis-py 8 defaults to 5 s, which would end a longer BLPOP early.
        client = redis.Redis.from_url(events_url(), socket_timeout=None)
        try:
            client.blpop([release_key], timeout=120)  # until the test releases it
        finally:
            client.close()
        emit_sync(context, "finished")
        return "ignored the abort"


def _define_fault_tasks(broker: AsyncBroker) -> None:
    """Tasks of the fault, load and chaos tests (tests/test_faults.py and friends)."""

    @broker.task(task_name="idle")
    async def idle(seconds: float) -> str:
        await asyncio.sleep(seconds)  # no events: 10,000 of these run at once in the load test
        return "idled"

    @broker.task(task_name="chaos", retry_on_error=True, max_retries=3)
    async def chaos(seconds: float, fail_times: int, context: Context = TaskiqDepends()) -> str:
        attempt = int(context.message.labels.get("_retries", 0))
        prefix = os.environ["TASKIQ_ABORT_TEST_PREFIX"]
        # A shared redis-py client first, as real task code does: it may swallow the abort.
        await marks().set(f"{prefix}:mark:{context.message.task_id}:{attempt}", 1)
        await emit(context, f"started-{attempt}")
        await asyncio.sleep(seconds)
        if attempt < fail_times:
            raise RuntimeError(f"attempt {attempt} fails on purpose")  # retried, same task id
        await emit(context, "body-done")
        return f"done after {attempt} retries"

    @broker.task(task_name="introspect")
    async def introspect() -> dict[str, Any]:
        """What the worker's abort state holds, seen from inside the worker process."""
        import gc

        from taskiq_abort._worker.attempt import RunningTask
        from taskiq_abort._worker.body import Redeliveries

        mw = next(m for m in broker.middlewares if isinstance(m, AbortMiddleware))
        side = mw.worker
        gc.collect()
        with open("/proc/self/statm") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        return {
            "blocks": sys.getallocatedblocks(),  # live Python objects; RSS keeps freed arenas
            "running": sorted(side.running) if side else None,
            "recent": len(side.recent) if side else None,
            "pending_starts": len(side._starts) if side else None,
            "pending_finishes": len(side._finishes) if side else None,
            "confirms": len(side._confirmations.tasks) if side else None,
            "run_objects": sum(isinstance(o, RunningTask) for o in gc.get_objects()),
            "asyncio_tasks": len(asyncio.all_tasks()),
            "rss": rss,
            "malformed": getattr(mw.backend, "malformed_messages", None),
            "redeliveries": Redeliveries.count,
        }


if os.environ.get("TASKIQ_ABORT_TEST_CLOCK_SKEW"):
    # This worker's clock is wrong by that many seconds (tests/test_time_limits.py).
    _skew, _true_time = float(os.environ["TASKIQ_ABORT_TEST_CLOCK_SKEW"]), time.time
    time.time = lambda: _true_time() + _skew

if "TASKIQ_ABORT_TEST_URL" in os.environ:
    broker = make_broker(
        os.environ["TASKIQ_ABORT_TEST_URL"],
        os.environ["TASKIQ_ABORT_TEST_PREFIX"],
        os.environ.get("TASKIQ_ABORT_TEST_BROKER", "stream"),
        os.environ.get("TASKIQ_ABORT_TEST_ABORT_FIRST") == "1",
        float(os.environ.get("TASKIQ_ABORT_TEST_LEASE", "10")),
        abort_url=os.environ.get("TASKIQ_ABORT_TEST_ABORT_URL") or None,
        fail_closed=os.environ.get("TASKIQ_ABORT_TEST_FAIL_CLOSED") == "1",
        idle_timeout_ms=int(os.environ.get("TASKIQ_ABORT_TEST_IDLE_MS", "0")) or None,
        channel=os.environ.get("TASKIQ_ABORT_TEST_CHANNEL") or None,
        interrupt_threads=os.environ.get("TASKIQ_ABORT_TEST_INTERRUPT") == "1",
        soft_time_limit=float(os.environ.get("TASKIQ_ABORT_TEST_SOFT_LIMIT", "0")) or None,
        time_limit=float(os.environ.get("TASKIQ_ABORT_TEST_TIME_LIMIT", "0")) or None,
        queue=os.environ.get("TASKIQ_ABORT_TEST_QUEUE") or None,
    )
