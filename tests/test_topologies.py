"""Redis Cluster and Sentinel (issue 8): the core scenarios on real deployments the suite
starts (``redis_cluster``, ``redis_sentinel`` in conftest), with taskiq-redis's brokers for
them; a server of the wrong kind is a clear error at start-up.

Tasks report their events to the session's standalone Redis (``TASKIQ_ABORT_TEST_EVENTS_URL``),
the app itself runs on the Cluster or Sentinel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from taskiq import AsyncBroker

from taskiq_abort import (
    AbortConfigError,
    AbortMiddleware,
    AbortStatus,
    TaskAbortedError,
    TaskExpired,
    TaskTimeLimitExceeded,
)
from tests.app import make_broker
from tests.conftest import Events, WorkerProcess
from tests.support.redis_servers import ClusterServers, SentinelServers
from tests.test_cli import cli, json_lines

pytestmark = pytest.mark.anyio


def target(request: pytest.FixtureRequest, kind: str) -> str:
    """The test app's URL (``tests/app.py``) on the session's Cluster or Sentinel."""
    if kind == "cluster":
        cluster: ClusterServers = request.getfixturevalue("redis_cluster")
        node = next(n for n in cluster.nodes if n.proc is not None)
        return f"cluster://127.0.0.1:{node.port}"
    sentinel: SentinelServers = request.getfixturevalue("redis_sentinel")
    hosts = ",".join(f"{h}:{p}" for h, p in sentinel.addresses)
    return f"sentinel://{hosts}/{sentinel.master_name}"


@pytest.fixture(params=["cluster", "sentinel"])
def topo(request: pytest.FixtureRequest) -> str:
    return target(request, str(request.param))


@pytest.fixture
async def tclient(topo: str, prefix: str) -> AsyncIterator[AsyncBroker]:
    broker = make_broker(topo, prefix, "list")
    await broker.startup()
    yield broker
    await broker.shutdown()


@pytest.fixture
def tworkers(topo: str, prefix: str, redis_url: str) -> Iterator[type[WorkerProcess]]:
    """Worker processes of the test app on ``topo``; their events go to ``redis_url``."""
    started: list[WorkerProcess] = []

    class Factory(WorkerProcess):
        def __init__(self, **kwargs: Any) -> None:
            env = {"TASKIQ_ABORT_TEST_EVENTS_URL": redis_url, **kwargs.pop("env", {})}
            super().__init__(topo, prefix, broker="list", env=env, **kwargs)
            started.append(self)

    yield Factory
    for worker in started:
        worker.stop()


async def test_running_task_is_aborted(tclient, tworkers, events: Events) -> None:
    tworkers().start()
    task = await tclient.find_task("sleeper").kiq(60)
    events.wait(task.task_id, "started")
    outcome = await task.abort(reason="stop")
    assert (outcome.status, outcome.reason) == (AbortStatus.ABORTED, "stop")
    assert events.all(task.task_id)[-1] == "finally"
    result = await task.wait_result(timeout=10)
    assert isinstance(result.error, TaskAbortedError)


async def test_queued_task_is_revoked_and_never_runs(tclient, tworkers, events: Events) -> None:
    queued = await tclient.find_task("sleeper").kiq(60)  # no worker yet: it waits in the queue
    assert (await queued.abort()).status is AbortStatus.REVOKED
    assert (await queued.abort()).status is AbortStatus.REVOKED  # and says so again
    tworkers().start()
    after = await tclient.find_task("quick").kiq(1)  # one worker, FIFO: picked up after it
    events.wait(after.task_id, "started")
    assert (await after.wait_result(timeout=10)).return_value == 2
    assert "started" not in events.all(queued.task_id)
    assert isinstance((await queued.wait_result(timeout=10)).error, TaskAbortedError)


async def test_time_limit_and_expiry(tclient, tworkers, events: Events) -> None:
    """The start check reads the server's TIME inside the script (one slot, then WAIT)."""
    tworkers().start()
    quick = tclient.find_task("quick")
    expired = await quick.kicker().with_labels(expires_at=time.time() - 1).kiq(1)
    assert isinstance((await expired.wait_result(timeout=10)).error, TaskExpired)
    limited = await tclient.find_task("sleeper").kicker().with_labels(time_limit=0.3).kiq(60)
    assert isinstance((await limited.wait_result(timeout=10)).error, TaskTimeLimitExceeded)
    assert "started" not in events.all(expired.task_id)
    assert events.all(limited.task_id)[-1] == "finally"


async def test_finished_task(tclient, tworkers) -> None:
    tworkers().start()
    task = await tclient.find_task("quick").kiq(21)
    assert (await task.wait_result(timeout=10)).return_value == 42
    assert (await task.abort()).status is AbortStatus.FINISHED


async def test_aborted_task_is_never_retried(tclient, tworkers, events: Events) -> None:
    tworkers().start()
    task = await tclient.find_task("flaky").kiq()
    events.wait(task.task_id, "started")
    assert (await task.abort()).status is AbortStatus.ABORTED
    assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)
    after = await tclient.find_task("quick").kiq(1)  # a retry would have been queued before it
    await after.wait_result(timeout=10)
    assert events.all(task.task_id).count("started") == 1


async def test_cli_abort_ls_status(
    request: pytest.FixtureRequest, topo: str, prefix: str, tclient, tworkers, events: Events
) -> None:
    tworkers().start()
    task = await tclient.find_task("sleeper").kiq(60)
    events.wait(task.task_id, "started")
    if topo.startswith("cluster://"):
        conn = ["--cluster", "--redis-url", "redis://" + topo.removeprefix("cluster://")]
    else:
        hosts, _, master = topo.removeprefix("sentinel://").partition("/")
        conn = ["--sentinel", hosts, "--master-name", master]
    conn += ["--prefix", prefix]

    listed = cli(*conn, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert task.task_id in {row["task_id"] for row in json_lines(listed.stdout)}
    aborted = cli(*conn, task.task_id, "--json")
    assert aborted.returncode == 0, aborted.stderr
    assert json_lines(aborted.stdout)[0]["status"] == "aborted"
    status = cli(*conn, "status", task.task_id, "--json")
    assert status.returncode == 0, status.stderr
    assert json_lines(status.stdout)[0]["abort_request"]["outcome"] == "aborted"


# --- the wrong kind of server: a clear error at start-up, in bounded time -----------------
async def _startup_error(middleware: AbortMiddleware) -> str:
    from taskiq import InMemoryBroker

    broker = InMemoryBroker().with_middlewares(middleware)
    with pytest.raises(AbortConfigError) as info:
        await asyncio.wait_for(broker.startup(), 30)
    await broker.shutdown()
    return str(info.value)


async def test_standalone_url_against_a_cluster(redis_cluster: ClusterServers) -> None:
    assert "pass cluster=True" in await _startup_error(AbortMiddleware(redis_cluster.url))


async def test_cluster_true_against_a_standalone_redis(redis_url: str) -> None:
    message = await _startup_error(AbortMiddleware(redis_url, cluster=True))
    assert "drop cluster=True" in message


async def test_wrong_master_name(redis_sentinel: SentinelServers) -> None:
    mw = AbortMiddleware(sentinels=redis_sentinel.addresses, master_name="nosuchmaster")
    message = await _startup_error(mw)
    assert "no master named 'nosuchmaster'" in message
    assert "mymaster" in message


def test_a_misspelt_option_is_refused_at_once() -> None:
    with pytest.raises(AbortConfigError, match=r"'cluter' .*did you mean 'cluster'"):
        AbortMiddleware("redis://127.0.0.1:1/0", cluter=True)
    with pytest.raises(AbortConfigError, match="'ssl_ca_cert' "):
        AbortMiddleware("redis://127.0.0.1:1/0", ssl_ca_cert="/ca.pem")
    AbortMiddleware("redis://127.0.0.1:1/0", ssl_ca_certs="/ca.pem", username="u")  # fine


def test_cli_topology_errors(redis_cluster: ClusterServers, redis_url: str) -> None:
    plain = cli("--redis-url", redis_cluster.url, "ls")
    assert plain.returncode == 2 and "pass cluster=True (CLI: --cluster)" in plain.stderr
    wrong = cli("--cluster", "--redis-url", redis_url, "ls")
    assert wrong.returncode == 2 and "drop cluster=True" in wrong.stderr
    half = cli("--sentinel", "127.0.0.1:1", "ls")
    assert half.returncode == 2 and "--master-name" in half.stderr


async def test_slot_migration_reaches_no_user(redis_cluster: ClusterServers, prefix: str) -> None:
    """The prefix's slot moves to another master while a task runs (a resharding): the worker's
    lane follows the MOVED, its subscription the server's SUNSUBSCRIBE; aborts keep working and
    no MOVED error reaches anyone."""
    from taskiq import InMemoryBroker

    from taskiq_abort._wire.keys import KeySpace

    middleware = AbortMiddleware(redis_cluster.url, cluster=True, prefix=prefix)
    broker = InMemoryBroker().with_middlewares(middleware)
    started: dict[str, asyncio.Event] = {}

    @broker.task(task_name="slot_sleeper")
    async def sleeper(tag: str) -> None:
        started[tag].set()
        await asyncio.sleep(60)

    async def running(tag: str) -> Any:
        started[tag] = asyncio.Event()
        task = await sleeper.kiq(tag)
        await asyncio.wait_for(started[tag].wait(), 30)
        return task

    await broker.startup()
    try:
        before = await running("before")
        old = redis_cluster.owner(KeySpace(prefix).tag)
        new = await asyncio.to_thread(redis_cluster.move_slot, KeySpace(prefix).tag)
        assert new is not old
        after = await running("after")  # registered through the lane, on the new master
        assert (await after.abort()).status is AbortStatus.ABORTED
        assert (await before.abort()).status is AbortStatus.ABORTED
        assert (await middleware.abort("queued-after-move")).status is AbortStatus.REVOKED
    finally:
        await broker.shutdown()
