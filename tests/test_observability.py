"""Aborts in OpenTelemetry (the SDK's in-memory exporter), taskiq's progress API (through
``RedisAsyncResultBackend``), the aborter's metrics and logs: in-process, on an
``InMemoryBroker`` whose abort control plane and result backend are a real Redis."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aredis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import REGISTRY
from taskiq import AsyncBroker, InMemoryBroker
from taskiq.middlewares.opentelemetry_middleware import OpenTelemetryMiddleware
from taskiq_redis import RedisAsyncResultBackend

from taskiq_abort import (
    AbortMiddleware,
    AbortObservability,
    AbortStatus,
    abort,
    find_middleware,
)
from taskiq_abort._wire.protocol import AbortMessage
from taskiq_abort.observability import events
from taskiq_abort.observability.otel import EVENT
from taskiq_abort.observability.progress import ABORTED
from tests.conftest import ROOT
from tests.support.redis_servers import RedisServer

pytestmark = pytest.mark.anyio


@dataclass
class App:
    broker: AsyncBroker
    provider: TracerProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    started: asyncio.Event
    result_prefix: str

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def otel_errors(self, task_name: str) -> float:
        data = self.reader.get_metrics_data()
        total = 0.0
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "task_errors":
                        for point in metric.data.data_points:
                            if dict(point.attributes or {}).get("task_name") == task_name:
                                total += point.value  # type: ignore[union-attr]
        return total


@pytest.fixture(params=[False, True], ids=["aborts-not-errors", "aborts-as-errors"])
async def app(request: pytest.FixtureRequest, redis_url: str, prefix: str) -> AsyncIterator[App]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    result_prefix = f"{prefix}:result"
    broker = (
        InMemoryBroker()
        .with_result_backend(RedisAsyncResultBackend(redis_url, prefix_str=result_prefix))
        .with_middlewares(
            OpenTelemetryMiddleware(
                tracer_provider=provider, meter_provider=MeterProvider(metric_readers=[reader])
            ),
            AbortMiddleware(redis_url, prefix=prefix),
            AbortObservability(tracer_provider=provider, count_aborts_as_errors=request.param),
        )
    )
    started = asyncio.Event()

    @broker.task(task_name="obs_sleep")
    async def obs_sleep() -> str:
        started.set()
        await asyncio.sleep(60)
        return "slept"

    @broker.task(task_name="obs_boom")
    async def obs_boom() -> str:
        raise RuntimeError("a real failure")

    await broker.startup()
    try:
        yield App(broker, provider, exporter, reader, started, result_prefix)
    finally:
        await broker.shutdown()


def prom(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_running_abort_in_traces_metrics_and_progress(
    app: App, request: Any, redis_url: str
) -> None:
    as_errors = "aborts-as-errors" in request.node.callspec.id
    tracer = app.provider.get_tracer("test")
    before = prom("aborted_tasks_total", task_name="obs_sleep", phase="running")
    requests_before = prom("abort_requests_total", status="aborted")

    with tracer.start_as_current_span("caller") as caller:
        task = await app.broker.find_task("obs_sleep").kiq()  # type: ignore[union-attr]
        await app.started.wait()
        outcome = await task.abort(reason="user pressed stop")
    assert outcome.status is AbortStatus.ABORTED

    (execute,) = app.spans("execute/obs_sleep")
    (event,) = [e for e in execute.events if e.name == EVENT]
    attrs = dict(event.attributes or {})
    assert attrs["taskiq_abort.task_id"] == task.task_id
    assert attrs["taskiq_abort.reason"] == "user pressed stop"
    assert attrs["taskiq_abort.phase"] == "running"
    assert attrs["taskiq_abort.delivery_ms"] >= 0  # on the Redis clock
    assert str(attrs["taskiq_abort.requested_by"]).endswith(f":{os.getpid()}")
    if as_errors:
        assert execute.status.status_code is StatusCode.ERROR  # taskiq's own behaviour
        assert app.otel_errors("obs_sleep") == 1
    else:
        assert execute.status.status_code is StatusCode.UNSET
        assert not [e for e in execute.events if e.name == "exception"]
        assert app.otel_errors("obs_sleep") == 0

    # The aborter's span: a child of the caller's, linked to the aborted task's execute span.
    (aborter,) = app.spans("abort/obs_sleep")
    assert aborter.parent is not None
    assert aborter.parent.span_id == caller.get_span_context().span_id
    (link,) = aborter.links
    assert link.context.trace_id == execute.context.trace_id
    assert link.context.span_id == execute.context.span_id
    assert dict(aborter.attributes or {})["taskiq_abort.status"] == "aborted"

    # Progress, read back through a fresh RedisAsyncResultBackend.
    reader: RedisAsyncResultBackend[Any] = RedisAsyncResultBackend(
        redis_url, prefix_str=app.result_prefix
    )
    try:
        progress = await reader.get_progress(task.task_id)
    finally:
        await reader.shutdown()
    assert progress is not None
    assert progress.state == ABORTED
    assert progress.meta["reason"] == "user pressed stop"
    assert progress.meta["span_id"] == format(execute.context.span_id, "016x")

    assert prom("aborted_tasks_total", task_name="obs_sleep", phase="running") - before == 1
    assert prom("abort_requests_total", status="aborted") - requests_before == 1

    # A real failure is still an error, whatever the option.
    failing = await app.broker.find_task("obs_boom").kiq()  # type: ignore[union-attr]
    assert (await failing.wait_result(timeout=10)).is_err
    await app.broker.wait_all()  # type: ignore[attr-defined]
    (boom,) = app.spans("execute/obs_boom")
    assert boom.status.status_code is StatusCode.ERROR
    assert app.otel_errors("obs_boom") == 1


async def test_revoked_task_reports_aborted_progress(app: App) -> None:
    task_id = f"revoke-{uuid.uuid4().hex}"
    before = prom("aborted_tasks_total", task_name="obs_sleep", phase="queued")

    outcome = await abort(app.broker, task_id, reason="not needed")  # nobody runs it yet
    assert outcome.status is AbortStatus.REVOKED
    progress = await app.broker.result_backend.get_progress(task_id)
    assert progress is not None
    assert (progress.state, progress.meta["phase"]) == (ABORTED, "queued")
    assert progress.meta["reason"] == "not needed"

    # A worker that picks it up later refuses it at its start, and says so too.
    kicker = app.broker.find_task("obs_sleep").kicker().with_task_id(task_id)  # type: ignore[union-attr]
    await kicker.kiq()
    await app.broker.wait_all()  # type: ignore[attr-defined]
    assert not app.started.is_set()
    assert prom("aborted_tasks_total", task_name="obs_sleep", phase="queued") - before == 1
    (execute,) = app.spans("execute/obs_sleep")
    (event,) = [e for e in execute.events if e.name == EVENT]
    assert dict(event.attributes or {})["taskiq_abort.phase"] == "queued"
    progress = await app.broker.result_backend.get_progress(task_id)
    assert progress is not None
    assert progress.meta["span_id"] == format(execute.context.span_id, "016x")


async def test_malformed_messages_counted(app: App, redis_url: str) -> None:
    before = prom("abort_malformed_messages_total")
    task = await app.broker.find_task("obs_sleep").kiq()  # type: ignore[union-attr]
    await app.started.wait()
    middleware = find_middleware(app.broker)
    assert middleware.worker is not None
    channel = middleware.backend.keys.worker_channel(middleware.worker.worker_id)  # type: ignore[attr-defined]
    client = aredis.Redis.from_url(redis_url)
    try:
        await client.publish(channel, b"{not json")
        await client.publish(channel, AbortMessage(task.task_id, "x").encode())
    finally:
        await client.aclose()
    # The channel is ordered: once the abort is applied, the garbage before it was dropped.
    result = await task.wait_result(timeout=10)
    assert result.is_err
    assert prom("abort_malformed_messages_total") - before == 1


async def test_one_log_line_per_abort(app: App, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="taskiq_abort")
    # The worker's line goes to taskiq's receiver logger, at INFO (as `taskiq worker` sets it);
    # below INFO it is not written at all (test_inmemory.py checks that).
    caplog.set_level(logging.INFO, logger="taskiq.receiver.receiver")
    task = await app.broker.find_task("obs_sleep").kiq()  # type: ignore[union-attr]
    await app.started.wait()
    await task.abort(reason="enough")
    lines = [
        r.getMessage()
        for r in caplog.records
        if (task.task_id in r.getMessage() and r.name != "taskiq.receiver.receiver")
        or r.getMessage().startswith(f"taskiq-abort: aborted task {task.task_id}")
    ]  # taskiq's own "Executing task ..." line aside
    assert len(lines) == 2, lines  # the worker's and the aborter's, nothing per heartbeat
    worker_line = next(line for line in lines if "while running" in line)
    assert "(obs_sleep)" in worker_line
    assert "reason: enough" in worker_line
    assert " ms" in worker_line  # the delivery time
    aborter_line = next(line for line in lines if line.startswith("taskiq-abort: abort of"))
    assert ": aborted by " in aborter_line


async def test_registry_outage_counted_once() -> None:
    """Redis of the control plane killed under a worker: one outage, however many failed calls."""

    class Watch(events.Observer):
        def __init__(self) -> None:
            self.outage = asyncio.Event()

        def registry_outage(self) -> None:
            self.outage.set()

    server = RedisServer().start()
    middleware = AbortMiddleware(server.url, lease=0.3, redis_timeout=0.5)
    broker = InMemoryBroker().with_middlewares(
        middleware, AbortObservability(tracing=False, progress=False)
    )
    attempts, enough = [0], asyncio.Event()
    register = middleware.backend.register

    async def counted(*args: Any) -> Any:  # the worker retries by re-registering
        attempts[0] += 1
        if attempts[0] >= 5:
            enough.set()
        return await register(*args)

    middleware.backend.register = counted  # type: ignore[method-assign]
    watch = Watch()
    events.subscribe(watch)
    before = prom("abort_registry_outages_total")
    await broker.startup()
    try:
        server.kill()
        await asyncio.wait_for(watch.outage.wait(), 30)
        await asyncio.wait_for(enough.wait(), 30)  # several more failed attempts
        assert prom("abort_registry_outages_total") - before == 1
    finally:
        events.unsubscribe(watch)
        await broker.shutdown()
        server.cleanup()


async def test_forced_counter(app: App) -> None:
    """No grace period exists yet, so nothing calls it; the metric is there for when it does."""
    forced = prom("forced_aborts_total", task_name="obs_sleep")
    events.abort_forced("obs_sleep")
    assert prom("forced_aborts_total", task_name="obs_sleep") - forced == 1


def test_hub_survives_a_failing_observer(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(events.Observer):
        def registry_outage(self) -> None:
            raise RuntimeError("observer bug")

    broken = Broken()
    events.subscribe(broken)
    try:
        events.registry_outage()  # logged, not raised
    finally:
        events.unsubscribe(broken)
    assert "observer" in caplog.text


INSTRUMENTOR_SCRIPT = """
import asyncio
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from taskiq import InMemoryBroker
from taskiq.instrumentation import TaskiqInstrumentor
from taskiq_abort import AbortMiddleware, AbortObservability

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
TaskiqInstrumentor().instrument()  # adds OpenTelemetryMiddleware to every broker built now
broker = InMemoryBroker().with_middlewares(AbortMiddleware(), AbortObservability(metrics=False))
started = asyncio.Event()

@broker.task(task_name="instrumented")
async def instrumented() -> None:
    started.set()
    await asyncio.sleep(60)

async def main() -> None:
    await broker.startup()
    task = await instrumented.kiq()
    await started.wait()
    with trace.get_tracer("test").start_as_current_span("caller"):
        assert (await task.abort(reason="from the instrumentor test")).status == "aborted"
    await broker.shutdown()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    execute = spans["execute/instrumented"]
    assert [e.name for e in execute.events] == ["taskiq_abort.aborted"], execute.events
    assert execute.status.status_code is StatusCode.UNSET
    (link,) = spans["abort/instrumented"].links
    assert link.context.span_id == execute.context.span_id
    print("ok")

asyncio.run(main())
"""


def test_with_taskiq_instrumentor() -> None:
    """``TaskiqInstrumentor`` patches every broker of the process: in a process of its own."""
    proc = subprocess.run(
        [sys.executable, "-c", INSTRUMENTOR_SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.stdout.strip() == "ok", proc.stderr
