"""The same abort semantics on every broker: RabbitMQ (taskiq-aio-pika), NATS JetStream pull and
push and core NATS (taskiq-nats), and taskiq-redis's PubSub, ListQueue and Stream brokers, with
the abort plane on Redis and real ``taskiq worker`` processes (docs/brokers.md).

Each test runs once per broker, on that broker's one deployment (``tests/matrix.py``); a
scenario a broker cannot have skips, saying why (these skips are the table's "n/a" cells).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone

import pytest
from taskiq import AsyncBroker, ScheduleSource
from taskiq.scheduler.scheduled_task import ScheduledTask

from taskiq_abort import AbortStatus, TaskAbortedError, TaskExpired, abort
from taskiq_abort._wire.keys import KeySpace
from tests.broker_app import KINDS
from tests.conftest import Events
from tests.faultkit import apoll, poll, worker_log
from tests.matrix import (
    ACK_WAIT,
    LEASE,
    SLOTS,
    Deployment,
    deploy,
    jetstream_pending,
    nudge_stream_claims,
    rabbit_unavailable,
    running_scheduler,
    wait_event,
)
from tests.support.nats_server import NatsServer
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.anyio

DELAY_LABEL = {"rabbitmq"}
"""Brokers that honour taskiq's ``delay`` label; taskiq-redis and taskiq-nats ignore it (the
task is delivered at once), so there a delay is a schedule."""
REDELIVERY = {
    "rabbitmq": "kill",  # a worker dies holding the message: RabbitMQ requeues it
    "stream": "kill",  # ... the stream keeps it pending: another worker claims it (XAUTOCLAIM)
    "nats-pull": "ack_wait",  # JetStream delivers a task still running after its ack_wait again
    "nats-push": "ack_wait",
}
AT_MOST_ONCE = "n/a: at-most-once delivery, a task is never delivered again"
LONG = os.environ.get("TASKIQ_ABORT_LONG") == "1"
ROUNDS = 20


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    try:
        server = NatsServer().start()
    except RuntimeError as exc:
        pytest.skip(f"no nats-server to start for the NATS brokers: {exc}")
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module", params=KINDS)
def deployment(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Deployment]:
    kind = str(request.param)
    nats_server = request.getfixturevalue("nats_server") if kind.startswith("nats") else None
    if kind == "rabbitmq" and (why := rabbit_unavailable()):
        pytest.skip(why)
    with deploy(kind, redis_server, nats_server) as deployment:
        yield deployment


@pytest.fixture
async def client(deployment: Deployment) -> AsyncIterator[AsyncBroker]:
    async with deployment.client() as broker:
        yield broker


@pytest.fixture
def events(deployment: Deployment) -> Iterator[Events]:
    events = deployment.events()
    yield events
    events.client.close()


async def refused(
    deployment: Deployment, events: Events, task_id: str, runs: int = 0, why: str = "revoked"
) -> None:
    """Wait until every worker that got ``task_id`` refused it at its start (``why``: revoked
    or expired); fail as soon as its body runs instead (``runs``: how often it ran before it
    was aborted)."""
    needle = f"skipped {why} task {task_id}"

    async def settled() -> bool:
        ran = events.all(task_id).count("started") > runs
        return ran or worker_log(deployment.worker).count(needle) >= deployment.copies

    await apoll(settled, 30, f"{needle!r} x{deployment.copies} in {deployment.worker.log}")
    assert events.all(task_id).count("started") == runs, f"revoked {task_id} ran its body"


async def test_running_is_aborted_and_queued_is_revoked(
    deployment: Deployment, client: AsyncBroker, events: Events
) -> None:
    blockers = [await client.find_task("sleeper").kiq(60) for _ in range(SLOTS)]
    for blocker in blockers:
        await wait_event(events, blocker.task_id, "started", deployment.copies)
    queued = await client.find_task("quick").kiq(1)  # every slot is busy: it waits its turn
    outcome = await abort(client, queued.task_id, reason="queued")
    assert outcome.status is AbortStatus.REVOKED
    assert isinstance((await queued.wait_result(timeout=10)).error, TaskAbortedError)
    for blocker in blockers:  # a slot frees: the revoked task is delivered, and refused
        outcome = await abort(client, blocker.task_id, reason="running")
        assert outcome.status is AbortStatus.ABORTED, outcome
        await wait_event(events, blocker.task_id, "finally", deployment.copies)
        result = await blocker.wait_result(timeout=10)
        assert isinstance(result.error, TaskAbortedError)
        assert result.error.reason == "running"
    await refused(deployment, events, queued.task_id)


async def test_an_aborted_task_is_never_retried(
    deployment: Deployment, client: AsyncBroker, events: Events
) -> None:
    task = await client.find_task("flaky").kiq()  # retry_on_error=True, max_retries=3
    await wait_event(events, task.task_id, "started", deployment.copies)
    assert (await abort(client, task.task_id)).status is AbortStatus.ABORTED
    # Stored by the worker: SimpleRetryMiddleware stores no result when it retries (it kicks
    # the retry first, in on_error), so this result means no retry was kicked.
    assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)
    assert "Task 'flaky' invocation failed. Retrying." not in worker_log(deployment.worker)
    assert events.all(task.task_id).count("started") == deployment.copies


async def test_a_delayed_task_aborted_before_its_time_never_runs(
    deployment: Deployment, client: AsyncBroker, events: Events
) -> None:
    if deployment.kind not in DELAY_LABEL:
        pytest.skip("n/a: the broker ignores taskiq's `delay` label (see the schedule test)")
    async with deployment.client(request_ttl=1.0) as short_ttl:
        soon = await client.find_task("quick").kicker().with_labels(delay=1).kiq(1)
        # Due after this client's request_ttl: its abort request must be kept longer.
        late = await short_ttl.find_task("quick").kicker().with_labels(delay=3).kiq(2)
        assert (await abort(client, soon.task_id)).status is AbortStatus.REVOKED
        assert (await abort(short_ttl, late.task_id)).status is AbortStatus.REVOKED
        request = KeySpace(deployment.cfg.prefix).request(late.task_id)
        assert events.client.pttl(request) > 2000  # the ETA (3 s) + request_ttl, not 1 s
        await refused(deployment, events, soon.task_id)
        await refused(deployment, events, late.task_id)  # 3 s after its kick: the request was kept
    for task in (soon, late):
        assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)


async def test_an_expired_task_never_runs(
    deployment: Deployment, client: AsyncBroker, events: Events
) -> None:
    """Past its deadline at its start: refused on every worker that gets it. Where the broker
    honours ``delay``, ``expires`` counts from the kick: a delay beyond it means never."""
    quick = client.find_task("quick")
    late = await quick.kicker().with_labels(expires_at=time.time() - 1).kiq(1)
    await refused(deployment, events, late.task_id, why="expired")
    assert isinstance((await late.wait_result(timeout=10)).error, TaskExpired)
    if deployment.kind not in DELAY_LABEL:
        return
    delayed = await quick.kicker().with_labels(delay=2, expires=1).kiq(2)
    due = await quick.kicker().with_labels(delay=1, expires=30).kiq(3)
    assert (await due.wait_result(timeout=15)).return_value == 6
    await refused(deployment, events, delayed.task_id, why="expired")
    assert isinstance((await delayed.wait_result(timeout=10)).error, TaskExpired)


class _OneShotSource(ScheduleSource):
    """Schedules kept in this process; a time schedule goes once it was sent."""

    def __init__(self) -> None:
        self.schedules: list[ScheduledTask] = []

    async def get_schedules(self) -> list[ScheduledTask]:
        return list(self.schedules)

    async def add_schedule(self, schedule: ScheduledTask) -> None:
        self.schedules.append(schedule)

    def post_send(self, task: ScheduledTask) -> None:
        self.schedules.remove(task)


async def test_a_scheduled_task_aborted_before_its_time_never_runs(
    deployment: Deployment, client: AsyncBroker, events: Events
) -> None:
    source, task_id = _OneShotSource(), uuid.uuid4().hex
    # The scheduler starts after the abort: whenever its first tick comes, the kick follows it.
    when = datetime.now(timezone.utc) + timedelta(seconds=0.5)
    kicker = client.find_task("quick").kicker().with_task_id(task_id)
    await kicker.schedule_by_time(source, when, 3)
    assert (await abort(client, task_id)).status is AbortStatus.REVOKED
    async with running_scheduler(client, source):  # kicks it at its time, with its id
        await refused(deployment, events, task_id)

        async def sent() -> bool:  # the scheduler marks it sent after the kick, in its own time
            return not source.schedules

        await apoll(sent, 30, "the scheduler to mark the schedule sent")


async def test_a_redelivery_never_runs_an_aborted_task(
    deployment: Deployment, client: AsyncBroker, events: Events
) -> None:
    how = REDELIVERY.get(deployment.kind)
    if how is None:
        pytest.skip(AT_MOST_ONCE)
    if how == "ack_wait":
        await _jetstream_redelivers_a_running_task(deployment, client, events)
    else:
        await _a_killed_workers_task_comes_back_refused(deployment, client, events)


async def _jetstream_redelivers_a_running_task(
    deployment: Deployment, client: AsyncBroker, events: Events
) -> None:
    """taskiq-nats#16: a task running longer than ``ack_wait`` is delivered again, here into
    the same worker process, while its first copy runs: an abort must stop both copies, and
    the stored result must stay the abort's."""
    task = await client.find_task("sleeper").kiq(30)
    await wait_event(events, task.task_id, "started", 2, 10 * ACK_WAIT)  # two copies run
    assert (await abort(client, task.task_id, reason="both")).status is AbortStatus.ABORTED
    runs = events.all(task.task_id).count("started")
    await wait_event(events, task.task_id, "finally", runs, 10)  # not at the end of the sleep
    result = await task.wait_result(timeout=10)
    assert isinstance(result.error, TaskAbortedError)
    assert result.error.reason == "both"

    async def settled() -> bool:
        return await jetstream_pending(deployment) == (0, 0)

    await apoll(settled, 10 * ACK_WAIT, "JetStream to hold nothing unacked")
    assert events.all(task.task_id).count("started") == runs  # no copy ran after the abort
    assert (await task.wait_result(timeout=1)).error.reason == "both"


async def _a_killed_workers_task_comes_back_refused(
    deployment: Deployment, client: AsyncBroker, events: Events
) -> None:
    worker = deployment.worker
    task = await client.find_task("sleeper").kiq(60)
    await wait_event(events, task.task_id, "started")
    worker.stop()  # SIGKILL while it holds the task: the broker keeps it for another worker
    poll(lambda: not worker.live_workers(), 10 * LEASE, "the killed worker's lease to lapse")
    assert (await abort(client, task.task_id)).status is AbortStatus.REVOKED
    worker.start()
    if deployment.kind == "stream":
        needle = f"skipped revoked task {task.task_id}"
        await nudge_stream_claims(deployment, client, events, needle)
    await refused(deployment, events, task.task_id, runs=1)  # its run before the kill
    assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)


@pytest.mark.skipif(not LONG, reason="set TASKIQ_ABORT_LONG=1 for aborts racing redeliveries")
async def test_aborts_racing_a_jetstream_redelivery(
    deployment: Deployment, client: AsyncBroker, events: Events
) -> None:
    """Aborts that land around the moment JetStream delivers a running task again (its second
    copy starting, registering, or not yet there): every copy stops, every time."""
    if REDELIVERY.get(deployment.kind) != "ack_wait":
        pytest.skip("n/a: the broker does not deliver a running task again")
    rng = random.Random(16)
    copies: list[int] = []
    for _ in range(ROUNDS):
        task = await client.find_task("sleeper").kiq(30)
        first = await wait_event(events, task.task_id, "started")
        # Around the redelivery: ack_wait after the first delivery, +-0.3 s (a race generator).
        await asyncio.sleep(max(0.0, first + ACK_WAIT + rng.uniform(-0.3, 0.3) - time.time()))
        assert (await abort(client, task.task_id)).status is AbortStatus.ABORTED
        runs = events.all(task.task_id).count("started")
        await wait_event(events, task.task_id, "finally", runs, 10)
        assert isinstance((await task.wait_result(timeout=10)).error, TaskAbortedError)

        async def settled() -> bool:
            return await jetstream_pending(deployment) == (0, 0)

        await apoll(settled, 10 * ACK_WAIT, "JetStream to hold nothing unacked")
        assert events.all(task.task_id).count("started") == runs
        copies.append(runs)
    assert 1 in copies and max(copies) >= 2, copies  # both sides of the race happened
