"""``abort(..., cascade=True)`` with real ``taskiq worker`` processes (two), on a ListQueueBroker
and on RabbitMQ: a fan-out tree three levels deep (a parent kicks 10 children, each kicks 3),
half of it running and half queued, is aborted from its root: no task of the tree runs its body
to its end, and the task beside it is untouched; without ``cascade`` the children run on.
The app: ``tests/labels_app.py`` (``fan``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from taskiq import AsyncBroker
from taskiq.task import AsyncTaskiqTask

from taskiq_abort import AbortStatus, TaskAbortedError, abort, find_middleware
from tests.conftest import Events, WorkerProcess
from tests.faultkit import started
from tests.labels_app import AMQP_URL, env, make_labels_broker, rabbit_names
from tests.matrix import _delete_rabbit_names, rabbit_unavailable, wait_event
from tests.test_abort_where_worker import fan_out_running, kick, probe

pytestmark = pytest.mark.anyio
SLOTS = 11
"""Tasks each of the two workers runs at once: 22 in all, one other task and 21 of the tree's
41 (its root and 20 of its 10 children and 30 grandchildren); the rest of it stays queued."""


@pytest.fixture(params=("list", "rabbitmq"))
def kind(request: pytest.FixtureRequest) -> str:
    if request.param == "rabbitmq" and (why := rabbit_unavailable()):
        pytest.skip(why)
    return str(request.param)


@pytest.fixture
def worker(kind: str, redis_url: str, prefix: str) -> Iterator[WorkerProcess]:
    process = WorkerProcess(
        redis_url,
        prefix,
        workers=2,
        env=env(kind, redis_url, prefix, slots=SLOTS),
        app="tests.labels_app:broker",
        extra_args=("--max-async-tasks", str(SLOTS)),
    )
    yield process.start()
    process.stop()
    if kind == "rabbitmq":
        asyncio.run(_delete_rabbit_names(AMQP_URL, rabbit_names(prefix, "main")))


async def tree_running(client: AsyncBroker, root: str) -> int:
    """How many tasks of ``root``'s tree the registry shows running."""
    infos = await find_middleware(client).backend.workers()
    entries = [e for info in infos for e in info.tasks]
    return sum(1 for e in entries if root in (e.task_id, e.label_map.get("abort_root")))


def tree(rclient: redis.Redis, prefix: str, root: str) -> list[str]:
    return list(rclient.lrange(f"{prefix}:tree:{root}", 0, -1))


async def test_cascade_stops_a_fan_out_tree_half_running_half_queued(
    kind: str, worker: WorkerProcess, redis_url: str, prefix: str, rclient: redis.Redis,
    events: Events,
) -> None:  # fmt: skip
    async with started(make_labels_broker(kind, redis_url, prefix)) as client:
        await probe(client, events)

        # Without cascade: the parent stops, its children run on.
        small, children = await fan_out_running(client, events, rclient, prefix, 3)
        await wait_event(events, small.task_id, "started")
        outcome = await abort(client, small, reason="parent only")
        assert (outcome.status, outcome.descendants) == (AbortStatus.ABORTED, 0)
        for child in children:
            assert events.all(child) == ["started"]
            rclient.rpush(f"{prefix}:release:{child}", 1)
            result = await AsyncTaskiqTask(child, client.result_backend).wait_result(timeout=30)
            assert result.return_value == "done"

        # With cascade: the whole tree, half of it queued.
        other = await kick(client, "gate")
        await wait_event(events, other.task_id, "started")
        root = await client.find_task("fan").kiq([10, 3])  # type: ignore[union-attr]
        while await tree_running(client, root.task_id) < 2 * SLOTS - 1:
            await asyncio.sleep(0.05)  # until both workers are full (the rest is queued)
        outcome = await abort(client, root, reason="import cancelled", cascade=True)
        assert outcome.status is AbortStatus.ABORTED
        assert outcome.descendants == 2 * SLOTS - 2  # every running descendant
        # The children a parent kicked (grandchildren can start before the last children, so
        # some children may still be queued: then they kick none).
        nodes = tree(rclient, prefix, root.task_id)
        assert len(nodes) > 2 * SLOTS - 2
        never_started = 0
        for node in [root.task_id, *nodes]:
            result: Any = await AsyncTaskiqTask(node, client.result_backend).wait_result(timeout=30)
            assert isinstance(result.error, TaskAbortedError), (node, result)
            seen = events.all(node)
            assert "ended" not in seen, node
            never_started += not seen
        assert never_started == len(nodes) - (2 * SLOTS - 2)  # the queued ones were refused

        assert events.all(other.task_id) == ["started"]  # untouched
        rclient.rpush(f"{prefix}:release:{other.task_id}", 1)
        assert (await other.wait_result(timeout=30)).return_value == "released"
        after = await kick(client, "quick")
        assert (await after.wait_result(timeout=30)).return_value == "ran"
