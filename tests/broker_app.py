"""The test app on every broker of the matrix (``tests/test_broker_matrix.py``).

RabbitMQ through taskiq-aio-pika, NATS JetStream (pull and push consumers) and core NATS through
taskiq-nats, and taskiq-redis's PubSub, ListQueue and Stream brokers. Whatever the broker,
results and the abort plane live on the suite's Redis, and the tasks are those of
``tests/app.py`` (they report events to Redis; tests wait on them).

Workers load ``tests.broker_app:broker``, built from the environment that
:meth:`MatrixConfig.env` writes; a test builds its client from the same :class:`MatrixConfig`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from nats.js.api import ConsumerConfig, StreamConfig
from taskiq import AsyncBroker
from taskiq.middlewares import SimpleRetryMiddleware
from taskiq_aio_pika import AioPikaBroker, Exchange, Queue
from taskiq_nats import NatsBroker, PullBasedJetStreamBroker, PushBasedJetStreamBroker
from taskiq_redis import PubSubBroker, RedisAsyncResultBackend

from taskiq_abort import AbortMiddleware
from tests.app import _define_tasks, make_broker

KINDS = ("rabbitmq", "nats-pull", "nats-push", "nats", "pubsub", "list", "stream")
BROADCAST = ("nats", "pubsub")
"""Brokers that deliver every task to every worker: the matrix runs two worker processes."""
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
_ENV = "TASKIQ_ABORT_MATRIX_"


@dataclass(frozen=True)
class MatrixConfig:
    kind: str
    redis_url: str
    prefix: str
    amqp_url: str = DEFAULT_AMQP
    nats_url: str = ""
    ack_wait: float = 30.0
    """JetStream: seconds before a delivered, unacked task is delivered again."""
    lease: float = 10.0
    idle_ms: int = 0
    """RedisStreamBroker: ms before a killed worker's task is claimed by another (0: default)."""

    def env(self) -> dict[str, str]:
        """The environment of a worker process (``tests.conftest.WorkerProcess``)."""
        plain = {f"{_ENV}{k.upper()}": str(v) for k, v in asdict(self).items()}
        return {
            **plain,
            "TASKIQ_ABORT_TEST_URL": self.redis_url,  # where tasks report their events
            "TASKIQ_ABORT_TEST_PREFIX": self.prefix,
        }

    @classmethod
    def from_env(cls) -> MatrixConfig:
        def get(name: str) -> str:
            return os.environ[f"{_ENV}{name.upper()}"]

        return cls(
            kind=get("kind"),
            redis_url=get("redis_url"),
            prefix=get("prefix"),
            amqp_url=get("amqp_url"),
            nats_url=get("nats_url"),
            ack_wait=float(get("ack_wait")),
            lease=float(get("lease")),
            idle_ms=int(get("idle_ms")),
        )


@dataclass(frozen=True)
class RabbitNames:
    """The exchange and queues of one test run: its own, deleted afterwards."""

    exchange: str
    tasks: str
    delay: str
    dead: str

    @classmethod
    def of(cls, prefix: str) -> RabbitNames:
        return cls(f"{prefix}.exchange", f"{prefix}.tasks", f"{prefix}.delay", f"{prefix}.dead")


class _PushBroker(PushBasedJetStreamBroker):
    """taskiq-nats binds the push consumer in every process that starts the broker, so a client
    started while a worker listens fails ("consumer is already bound to a subscription";
    taskiq-nats#23), and with a queue group a client would take deliveries it never runs.
    Here only workers consume; the client only publishes."""

    async def _startup_consumer(self) -> None:
        if self.is_worker_process:
            await super()._startup_consumer()


def _inner(cfg: MatrixConfig) -> AsyncBroker:
    p = cfg.prefix
    if cfg.kind == "rabbitmq":
        names = RabbitNames.of(p)

        # taskiq-aio-pika's defaults (durable quorum queues, a topic exchange), our names.
        return AioPikaBroker(
            cfg.amqp_url,
            exchange=Exchange(name=names.exchange),
            task_queues=[Queue(name=names.tasks)],
            delay_queue=Queue(name=names.delay),  # the `delay` label: a TTL queue
            dead_letter_queue=Queue(name=names.dead),
        )
    if cfg.kind in ("nats-pull", "nats-push"):
        js_kw: dict[str, Any] = {
            "subject": f"{p}.tasks",
            "stream_config": StreamConfig(name=f"{p}-stream", subjects=[f"{p}.tasks"]),
        }
        if cfg.kind == "nats-pull":
            consumer = ConsumerConfig(durable_name=f"{p}-pull", ack_wait=cfg.ack_wait)
            return PullBasedJetStreamBroker(
                cfg.nats_url, durable=f"{p}-pull", consumer_config=consumer, **js_kw
            )
        name = f"{p}-push"
        consumer = ConsumerConfig(name=name, durable_name=name, ack_wait=cfg.ack_wait)
        return _PushBroker(cfg.nats_url, consumer_config=consumer, **js_kw)
    if cfg.kind == "nats":
        return NatsBroker(cfg.nats_url, subject=f"{p}.core")  # no queue group: every worker
    if cfg.kind == "pubsub":
        return PubSubBroker(cfg.redis_url, queue_name=f"{p}:pubsub")
    raise ValueError(f"unknown broker kind {cfg.kind!r}")


def make_matrix_broker(cfg: MatrixConfig, **abort_options: Any) -> AsyncBroker:
    """The test app on ``cfg.kind``; ``abort_options`` go to ``AbortMiddleware``
    (``request_ttl``...)."""
    if cfg.kind in ("list", "stream"):  # tests/app.py's own brokers
        return make_broker(
            cfg.redis_url,
            cfg.prefix,
            cfg.kind,
            lease=cfg.lease,
            idle_timeout_ms=cfg.idle_ms or None,
            **abort_options,
        )
    abort_mw = AbortMiddleware(cfg.redis_url, prefix=cfg.prefix, lease=cfg.lease, **abort_options)
    results = RedisAsyncResultBackend(cfg.redis_url, prefix_str=f"{cfg.prefix}:result")
    broker = (
        _inner(cfg)
        .with_result_backend(results)
        .with_middlewares(SimpleRetryMiddleware(default_retry_count=3), abort_mw)
    )
    _define_tasks(broker)
    return broker


if f"{_ENV}KIND" in os.environ:
    broker = make_matrix_broker(MatrixConfig.from_env())
