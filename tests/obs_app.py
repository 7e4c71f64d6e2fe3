"""The application of the observability tests: ``taskiq worker tests.obs_app:broker`` with
taskiq's ``PrometheusMiddleware``, ``AbortMiddleware`` and ``AbortObservability``.

``OBS_ORDER=abort_first`` builds our middlewares, and imports
``taskiq_abort.observability.metrics``, before ``PrometheusMiddleware`` sets its multiprocess
directory: the import-order trap.
``OBS_ORDER=own_port``: no ``PrometheusMiddleware``; ``AbortObservability`` serves the metrics.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from taskiq import AsyncBroker, Context, TaskiqDepends, TaskiqMiddleware
from taskiq.middlewares import PrometheusMiddleware
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

from taskiq_abort import AbortMiddleware, AbortObservability
from tests.app import emit


def make_broker(
    url: str,
    prefix: str,
    *,
    metrics_dir: str | None = None,
    metrics_port: int = 0,
    order: str = "prometheus_first",
) -> AsyncBroker:
    """With ``metrics_dir``, a worker's broker (with ``PrometheusMiddleware``); without, the
    test's client (which must not set ``PROMETHEUS_MULTIPROC_DIR`` in the test process)."""
    middlewares: list[TaskiqMiddleware] = []
    if order == "own_port" and metrics_dir is not None:  # a worker without PrometheusMiddleware
        observability = AbortObservability(metrics_port=metrics_port, metrics_path=metrics_dir)
        middlewares += [AbortMiddleware(url, prefix=prefix), observability]
        metrics_dir = None
    elif order == "abort_first":
        import taskiq_abort.observability.metrics  # noqa: F401  - must not import prometheus-client yet

        middlewares += [AbortMiddleware(url, prefix=prefix), AbortObservability()]
    if metrics_dir is not None:
        middlewares.append(PrometheusMiddleware(Path(metrics_dir), server_port=metrics_port))
    if not middlewares or order == "prometheus_first":
        middlewares += [AbortMiddleware(url, prefix=prefix), AbortObservability()]
    broker = (
        RedisStreamBroker(url, queue_name=f"{prefix}:queue", consumer_group_name=f"{prefix}:g")
        .with_result_backend(RedisAsyncResultBackend(url, prefix_str=f"{prefix}:result"))
        .with_middlewares(*middlewares)
    )

    @broker.task(task_name="obs_sleeper")
    async def obs_sleeper(context: Context = TaskiqDepends()) -> str:
        await emit(context, f"pid-{os.getpid()}")
        await emit(context, "started")
        await asyncio.sleep(60)
        return "slept"

    @broker.task(task_name="obs_fail")
    async def obs_fail() -> str:
        raise RuntimeError("a real failure")

    return broker


if "OBS_METRICS_DIR" in os.environ:
    broker = make_broker(
        os.environ["TASKIQ_ABORT_TEST_URL"],
        os.environ["TASKIQ_ABORT_TEST_PREFIX"],
        metrics_dir=os.environ["OBS_METRICS_DIR"],
        metrics_port=int(os.environ["OBS_METRICS_PORT"]),
        order=os.environ.get("OBS_ORDER", "prometheus_first"),
    )
