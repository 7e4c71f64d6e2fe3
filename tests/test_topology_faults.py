"""The fault scenarios of ``test_faults.py`` on Redis Cluster and Sentinel (issue 8): pub/sub
connections cut while aborts are made, a SIGKILLed worker, malformed control messages. The same
fixtures as ``test_topologies.py``: the app on the session's Cluster or Sentinel, the tasks'
events on the standalone Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from taskiq import AsyncBroker

from taskiq_abort import AbortStatus, TaskAbortedError, find_middleware
from taskiq_abort._wire.keys import KeySpace
from tests.app import make_broker
from tests.conftest import Events, WorkerProcess
from tests.faultkit import apoll
from tests.support.redis_servers import ClusterServers, SentinelServers
from tests.test_topologies import target

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["cluster", "sentinel"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def topo(request: pytest.FixtureRequest, kind: str) -> str:
    return target(request, kind)


def masters(request: pytest.FixtureRequest, kind: str) -> list[redis.Redis]:
    """Plain clients of every master now serving the app."""
    if kind == "cluster":
        cluster: ClusterServers = request.getfixturevalue("redis_cluster")
        ports = [n.port for n in cluster.nodes if n.proc is not None]
        nodes = [redis.Redis(port=p, decode_responses=True) for p in ports]
        return [n for n in nodes if n.info("replication")["role"] == "master"]
    sentinel: SentinelServers = request.getfixturevalue("redis_sentinel")
    return [redis.Redis(port=sentinel.current_master().port, decode_responses=True)]


def cut_pubsub(master: redis.Redis) -> int:
    """Close every pub/sub connection of ours on ``master``; not the Sentinels' own (whose
    loss can make them fail the master over, which is another test)."""
    cut = 0
    for client in master.client_list(_type="pubsub"):
        if not client.get("name", "").startswith("sentinel-"):
            cut += int(master.client_kill_filter(_id=client["id"]))
    return cut


def workers_of(topo: str, prefix: str, redis_url: str, started: list[WorkerProcess], **kw: Any):
    env = {"TASKIQ_ABORT_TEST_EVENTS_URL": redis_url, **kw.pop("env", {})}
    worker = WorkerProcess(topo, prefix, broker="list", env=env, **kw)
    started.append(worker)
    return worker.start()


@pytest.fixture
def started() -> Iterator[list[WorkerProcess]]:
    workers: list[WorkerProcess] = []
    yield workers
    for worker in workers:
        worker.stop()


@pytest.fixture
async def tclient(topo: str, prefix: str) -> AsyncIterator[AsyncBroker]:
    broker = make_broker(topo, prefix, "list", lease=1.0)
    await broker.startup()
    yield broker
    await broker.shutdown()


async def _running(client: AsyncBroker, events: Events) -> Any:
    task = await client.find_task("sleeper").kiq(60)
    await asyncio.to_thread(events.wait, task.task_id, "started")
    return task


async def test_aborts_racing_pubsub_cuts(
    request: pytest.FixtureRequest, kind: str, topo: str, prefix: str, redis_url: str,
    tclient: AsyncBroker, started: list[WorkerProcess], events: Events,
) -> None:  # fmt: skip
    """Every subscriber of the master(s) is cut just before each abort: the worker (and the
    aborter's reply listener) resubscribe, recheck the durable requests, and it is aborted."""
    workers_of(topo, prefix, redis_url, started)
    for _ in range(3):
        task = await _running(tclient, events)
        assert sum(cut_pubsub(m) for m in masters(request, kind)) >= 1
        outcome = await task.abort(reason="racing a cut", timeout=20)
        assert outcome.status is AbortStatus.ABORTED, outcome
        await asyncio.to_thread(events.wait, task.task_id, "finally")
        assert isinstance((await task.wait_result(timeout=15)).error, TaskAbortedError)


async def test_sigkilled_worker_leaves_within_its_lease(
    topo: str, prefix: str, redis_url: str, tclient: AsyncBroker,
    started: list[WorkerProcess], events: Events,
) -> None:  # fmt: skip
    worker = workers_of(topo, prefix, redis_url, started, env={"TASKIQ_ABORT_TEST_LEASE": "1"})
    task = await _running(tclient, events)
    backend = find_middleware(tclient).backend
    worker.stop()  # SIGKILL to the process group: no shutdown code runs

    async def gone() -> bool:
        return await backend.find_running(task.task_id) is None

    await apoll(gone, 15, "the killed worker's entry to expire")
    outcome = await task.abort(timeout=5)
    assert (outcome.status, outcome.worker) == (AbortStatus.REVOKED, None)
    assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)


async def test_malformed_control_messages_are_ignored(
    request: pytest.FixtureRequest, kind: str, topo: str, prefix: str, redis_url: str,
    tclient: AsyncBroker, started: list[WorkerProcess], events: Events,
) -> None:  # fmt: skip
    worker = workers_of(topo, prefix, redis_url, started)
    channel = KeySpace(prefix).worker_channel(worker.live_workers()[0])
    junk = ["not json", '{"v":2,"type":"abort"}', '{"v":99,"type":"abort","task_id":"x"}']
    if kind == "cluster":  # sharded, routed to the channel's slot, as the scripts publish
        port = int(topo.rsplit(":", 1)[1])
        with redis.RedisCluster(host="127.0.0.1", port=port) as cluster:
            receivers = sum(int(cluster.spublish(channel, m)) for m in junk)
    else:
        (master,) = masters(request, kind)
        receivers = sum(int(master.publish(channel, m)) for m in junk)
    assert receivers == len(junk)  # the worker got every one...
    task = await _running(tclient, events)  # ...and still aborts what it runs
    assert (await task.abort(timeout=10)).status is AbortStatus.ABORTED
    seen = await (await tclient.find_task("introspect").kiq()).wait_result(timeout=10)
    assert seen.return_value["malformed"] == len(junk)
