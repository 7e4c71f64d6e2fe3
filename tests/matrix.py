"""The broker matrix's deployments: for each broker, its servers, worker processes and clients.

One deployment per broker kind serves every scenario of ``tests/test_broker_matrix.py`` (a
module-scoped fixture there), so each broker costs one worker start-up. Where a broker's
server is missing, its tests skip and say why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import nats
import redis
from taskiq import AsyncBroker

from tests.broker_app import BROADCAST, DEFAULT_AMQP, MatrixConfig, RabbitNames, make_matrix_broker
from tests.conftest import Events, WorkerProcess
from tests.faultkit import poll, started, worker_log
from tests.support.nats_server import NatsServer
from tests.support.redis_servers import RedisServer

SLOTS = 2
"""``--max-async-tasks`` of the matrix's workers: two running tasks fill a worker, so a third
waits in the broker (``queued``), and a task delivered again can run beside its first copy."""
ACK_WAIT = 2.0
"""JetStream's ``ack_wait`` here (30 s by default): how soon a running task is delivered again."""
LEASE = 1.0
"""Worker lease: how soon a SIGKILLed worker no longer counts as holding its tasks."""
IDLE_MS = 2000
"""RedisStreamBroker: how soon another worker claims a killed worker's task."""
AMQP_URL = os.environ.get("TASKIQ_ABORT_TEST_AMQP_URL", DEFAULT_AMQP)


@dataclass
class Deployment:
    """One broker kind with its worker processes, ready for tasks."""

    cfg: MatrixConfig
    worker: WorkerProcess
    copies: int
    """Workers that receive each task: 2 on brokers that deliver every task to every worker."""

    @property
    def kind(self) -> str:
        return self.cfg.kind

    def client(self, **abort_options: Any) -> contextlib.AbstractAsyncContextManager[AsyncBroker]:
        """A started client broker of this deployment (``AbortMiddleware`` options may differ)."""
        return started(make_matrix_broker(self.cfg, **abort_options))

    def events(self) -> Events:
        return Events(
            redis.Redis.from_url(self.cfg.redis_url, decode_responses=True), self.cfg.prefix
        )


async def wait_event(
    events: Events, task_id: str, event: str, count: int = 1, timeout: float = 30.0
) -> float:
    """``events.wait`` off the event loop (returns the event's ``time.time()``): core NATS only
    sends a published task once the client's loop runs again (nats-py buffers it), so a test
    must not block its loop."""
    return await asyncio.to_thread(events.wait, task_id, event, timeout, count)


async def _rabbit_answers(url: str) -> str | None:
    """``None`` when RabbitMQ accepts a connection, else why not."""
    try:
        connection = await asyncio.wait_for(aio_pika.connect(url), 5)
    except Exception as exc:
        return f"no RabbitMQ answers at {url.rpartition('@')[2]}: {exc!r}"
    await connection.close()
    return None


async def _delete_rabbit_names(url: str, names: RabbitNames) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for queue in (names.tasks, names.delay, names.dead):
            await channel.queue_delete(queue)
        await channel.exchange_delete(names.exchange)


async def _probe(deployment: Deployment, timeout: float = 30.0) -> None:
    """Kick a task until every worker process runs it: a worker registers with the abort plane
    before its broker subscribes, and PubSub or core NATS drop what nobody listens to yet."""
    events = deployment.events()
    deadline = time.monotonic() + timeout
    try:
        async with deployment.client() as client:
            while True:
                task = await client.find_task("quick").kiq(0)
                try:
                    await wait_event(events, task.task_id, "started", deployment.copies, 1.0)
                    return
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
    finally:
        events.client.close()


@contextlib.contextmanager
def deploy(
    kind: str, redis_server: RedisServer, nats_server: NatsServer | None
) -> Iterator[Deployment]:
    """Start ``kind``'s workers (their servers are the caller's); stop them by PID afterwards,
    and delete RabbitMQ's exchange and queues of this run."""
    if redis_server.proc is None:  # a previous test stopped it
        redis_server.start()
    cfg = MatrixConfig(
        kind,
        redis_server.url,
        f"m{uuid.uuid4().hex[:10]}",
        amqp_url=AMQP_URL,
        nats_url=nats_server.url if nats_server else "",
        ack_wait=ACK_WAIT,
        lease=LEASE,
        idle_ms=IDLE_MS if kind == "stream" else 0,
    )
    copies = 2 if kind in BROADCAST else 1
    worker = WorkerProcess(
        cfg.redis_url,
        cfg.prefix,
        workers=copies,
        env=cfg.env(),
        app="tests.broker_app:broker",
        extra_args=("--max-async-tasks", str(SLOTS)),
    )
    deployment = Deployment(cfg, worker, copies)
    try:
        worker.start()
        asyncio.run(_probe(deployment))
        yield deployment
    except BaseException:
        print(f"--- {worker.log} ---\n{worker.log.read_text(errors='replace')[-4000:]}")
        raise
    finally:
        worker.stop()
        if kind == "rabbitmq":
            asyncio.run(_delete_rabbit_names(cfg.amqp_url, RabbitNames.of(cfg.prefix)))


def rabbit_unavailable() -> str | None:
    return asyncio.run(_rabbit_answers(AMQP_URL))


async def jetstream_pending(deployment: Deployment) -> tuple[int, int]:
    """(messages not yet delivered, delivered but not acked) of the deployment's consumer."""
    p = deployment.cfg.prefix
    durable = f"{p}-pull" if deployment.kind == "nats-pull" else f"{p}-push"
    client = await nats.connect(deployment.cfg.nats_url)
    try:
        info = await client.jetstream().consumer_info(f"{p}-stream", durable)
        return info.num_pending or 0, info.num_ack_pending or 0
    finally:
        await client.close()


async def nudge_stream_claims(
    deployment: Deployment, client: AsyncBroker, events: Events, needle: str
) -> None:
    """taskiq-redis claims (XAUTOCLAIM) a dead consumer's message idle for ``idle_timeout``
    only after reading a new one: once the killed worker's message is that idle, kick tasks
    until the worker logs ``needle``."""
    stream, group = f"{deployment.cfg.prefix}:queue", f"{deployment.cfg.prefix}:group"

    def idle_enough() -> bool:
        pending = events.client.xpending_range(stream, group, "-", "+", 100)
        return any(entry["time_since_delivered"] >= IDLE_MS for entry in pending)

    poll(idle_enough, 30, "the killed worker's message to be idle past idle_timeout")
    deadline = time.monotonic() + 30
    while needle not in worker_log(deployment.worker):
        assert time.monotonic() < deadline, f"{needle!r} never in {deployment.worker.log}"
        nudge = await client.find_task("quick").kiq(0)
        await wait_event(events, nudge.task_id, "started")


@contextlib.asynccontextmanager
async def running_scheduler(client: AsyncBroker, source: Any) -> AsyncIterator[None]:
    """taskiq's scheduler loop, in this process, sending ``source``'s schedules through
    ``client`` (the code ``taskiq scheduler`` runs)."""
    from taskiq import TaskiqScheduler
    from taskiq.cli.scheduler.run import SchedulerLoop

    loop = SchedulerLoop(TaskiqScheduler(client, [source]))
    task = asyncio.create_task(loop.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
