"""``abort_where`` with real ``taskiq worker`` processes (two), on a RedisStreamBroker and on
RabbitMQ: the matching running tasks stop on both workers and no other does; a matching task
queued before the call and one kicked after it never run, non-matching ones do; a rule that
expired or was cancelled refuses nothing. The app: ``tests/labels_app.py``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from taskiq import AsyncBroker

from taskiq_abort import AbortStatus, TaskAbortedError, abort_rules, abort_where, cancel_rule
from tests.conftest import Events, WorkerProcess
from tests.faultkit import started
from tests.labels_app import AMQP_URL, env, make_labels_broker, rabbit_names
from tests.matrix import _delete_rabbit_names, rabbit_unavailable, wait_event

pytestmark = pytest.mark.anyio
KINDS = ("stream", "rabbitmq")


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "rabbitmq" and (why := rabbit_unavailable()):
        pytest.skip(why)
    return str(request.param)


@pytest.fixture
def workers(kind: str, redis_url: str, prefix: str) -> Iterator[dict[str, WorkerProcess]]:
    """Worker processes by queue, started by the test; stopped (and RabbitMQ's exchanges and
    queues of this test deleted) afterwards."""
    made: dict[str, WorkerProcess] = {}
    yield made
    for worker in made.values():
        worker.stop()
    if kind == "rabbitmq":
        for queue in ("main", "later"):
            asyncio.run(_delete_rabbit_names(AMQP_URL, rabbit_names(prefix, queue)))


def start_workers(
    made: dict[str, WorkerProcess], kind: str, url: str, prefix: str, queue: str, n: int
) -> WorkerProcess:
    worker = WorkerProcess(
        url, prefix, workers=n, env=env(kind, url, prefix, queue), app="tests.labels_app:broker"
    )
    made[queue] = worker
    return worker.start()


@contextlib.asynccontextmanager
async def client(kind: str, url: str, prefix: str, queue: str = "main") -> AsyncIterator[Any]:
    async with started(make_labels_broker(kind, url, prefix, queue)) as broker:
        yield broker


async def kick(broker: AsyncBroker, name: str, tenant: str | None = None) -> Any:
    kicker = broker.find_task(name).kicker()  # type: ignore[union-attr]
    if tenant is not None:
        kicker = kicker.with_labels(tenant=tenant)
    return await kicker.kiq()


async def fan_out_running(
    broker: AsyncBroker, events: Events, rclient: redis.Redis, prefix: str, width: int
) -> tuple[Any, list[str]]:
    """Kick a ``fan`` task of ``width`` children (tests/labels_app.py); once each child runs:
    the parent's handle and the children's ids."""
    parent = await broker.find_task("fan").kiq([width])  # type: ignore[union-attr]
    while len(children := rclient.lrange(f"{prefix}:tree:{parent.task_id}", 0, -1)) < width:
        await asyncio.sleep(0.05)  # the parent lists each child it kicked
    ids = [str(child) for child in children]  # the client decodes replies
    for child in ids:
        await wait_event(events, child, "started")
    return parent, ids


async def probe(broker: AsyncBroker, events: Events) -> None:
    """A worker registers before its broker consumes: kick until one runs a task."""
    for _ in range(60):
        task = await kick(broker, "quick")
        with contextlib.suppress(TimeoutError):
            await wait_event(events, task.task_id, "started", timeout=1.0)
            return
    raise AssertionError("no worker ran a task")


async def running_on_both(
    broker: AsyncBroker, events: Events, rclient: redis.Redis, prefix: str
) -> dict[str, list[Any]]:
    """Gate tasks of tenant ``acme`` and ``zeta``, kicked in pairs until each tenant has tasks
    running in both worker processes."""
    kicked: dict[str, list[Any]] = {"acme": [], "zeta": []}
    pids: dict[str, set[str]] = {"acme": set(), "zeta": set()}
    for round_ in range(30):
        # Brokers often hand tasks to the workers in turn: swap the order every other round.
        for tenant in ("acme", "zeta")[:: 1 if round_ % 2 else -1]:
            task = await kick(broker, "gate", tenant)
            await wait_event(events, task.task_id, "started")
            kicked[tenant].append(task)
            pids[tenant].add(str(rclient.hget(f"{prefix}:pids", task.task_id)))
        if all(len(p) == 2 for p in pids.values()):
            return kicked
    raise AssertionError(f"tasks never ran on both workers: {pids}")


async def test_abort_where_stops_matching_tasks_running_queued_and_kicked_later(
    kind: str,
    workers: dict[str, WorkerProcess],
    redis_url: str,
    prefix: str,
    rclient: redis.Redis,
    events: Events,
) -> None:
    start_workers(workers, kind, redis_url, prefix, "main", 2)
    async with (
        client(kind, redis_url, prefix) as main,
        client(kind, redis_url, prefix, "later") as later,
    ):
        await probe(main, events)
        running = await running_on_both(main, events, rclient, prefix)
        queued = {t: await kick(later, "quick", t) for t in ("acme", "zeta")}

        summary = await abort_where(main, {"tenant": "acme"}, reason="account deleted")

        rule = summary.rule
        assert rule.reason == f"account deleted (abort rule {rule.rule_id})"
        assert [r.rule_id for r in await abort_rules(main)] == [rule.rule_id]
        acme = {task.task_id for task in running["acme"]}
        assert {o.task_id for o in summary.running} == acme
        assert {o.status for o in summary.running} == {AbortStatus.ABORTED}
        kicked = {t: await kick(main, "quick", t) for t in ("acme", "zeta")}
        start_workers(workers, kind, redis_url, prefix, "later", 1)
        for task in running["acme"]:
            result = await task.wait_result(timeout=30)
            assert isinstance(result.error, TaskAbortedError)
            assert "ended" not in events.all(task.task_id)
        for task in (queued["acme"], kicked["acme"]):  # refused at their start: never ran
            result = await task.wait_result(timeout=30)
            assert isinstance(result.error, TaskAbortedError)
            assert result.error.reason == rule.reason
            assert events.all(task.task_id) == []
        for task in (queued["zeta"], kicked["zeta"]):
            assert (await task.wait_result(timeout=30)).return_value == "ran"
        for task in running["zeta"]:  # untouched: still running until released
            assert events.all(task.task_id) == ["started"]
            rclient.rpush(f"{prefix}:release:{task.task_id}", 1)
            assert (await task.wait_result(timeout=30)).return_value == "released"

        assert await cancel_rule(main, rule.rule_id) is True  # matching tasks run again
        after = await kick(main, "quick", "acme")
        assert (await after.wait_result(timeout=30)).return_value == "ran"


async def test_an_expired_rule_refuses_nothing(
    kind: str, workers: dict[str, WorkerProcess], redis_url: str, prefix: str, events: Events
) -> None:
    start_workers(workers, kind, redis_url, prefix, "main", 2)
    async with client(kind, redis_url, prefix) as main:
        await probe(main, events)
        summary = await abort_where(main, {"tenant": "acme"}, ttl=0.5)
        assert summary.running == [] and summary.rule.expires_at > summary.rule.created_at
        while await abort_rules(main):  # until Redis expires it
            await asyncio.sleep(0.05)
        task = await kick(main, "quick", "acme")
        assert (await task.wait_result(timeout=30)).return_value == "ran"
