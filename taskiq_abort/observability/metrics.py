"""Prometheus metrics of aborts (extra ``metrics``: prometheus-client), fed by the events hub.

prometheus-client chooses multiprocess or in-process values once, when it is first imported:
imported before taskiq's ``PrometheusMiddleware`` has set ``PROMETHEUS_MULTIPROC_DIR``, it would
silently break taskiq's own cross-process metrics. ``taskiq worker`` imports this package (our
``taskiq abort`` CLI plugin) before it starts the worker processes, so nothing here imports
prometheus-client before :func:`enable` runs, in ``AbortObservability.startup()``: by then the
user's broker module, and any ``PrometheusMiddleware`` in it, has been built.

With ``PrometheusMiddleware``, the metrics land in its multiprocess directory and its server (on
the first worker process) shows them with its own; without it, ``serve()`` exposes them.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from taskiq_abort.observability import events

logger = logging.getLogger("taskiq_abort")

DELIVERY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Abort delivery is about a millisecond when all is well, seconds through a reconnect."""
REQUEST_BUCKETS = DELIVERY_BUCKETS


class AbortMetrics(events.Observer):
    """The metrics, registered in prometheus-client's default registry (one per process)."""

    def __init__(self) -> None:
        try:
            from prometheus_client import Counter, Histogram
        except ImportError as exc:  # pragma: no cover - the extra is missing
            raise ImportError(
                "taskiq-abort's metrics need prometheus-client: pip install 'taskiq-abort[metrics]'"
            ) from exc
        _check_mode()
        # Names follow taskiq's PrometheusMiddleware: snake_case, a `task_name` label, counters
        # exposed with a `_total` suffix.
        self.aborted_tasks = Counter(
            "aborted_tasks",
            "Task attempts ended by an abort, by phase (running: body cancelled; queued: "
            "revoked, skipped at its start; time_limit: stopped at its time limit; expired: "
            "skipped at its start, past its deadline)",
            ["task_name", "phase"],
        )
        self.forced_aborts = Counter(
            "forced_aborts",
            "Aborted attempts cancelled because their grace period ran out",
            ["task_name"],
        )
        self.delivery = Histogram(
            "abort_delivery_seconds",
            "From the abort request being recorded to the task body ending aborted on its "
            "worker, on the Redis clock",
            ["task_name"],
            buckets=DELIVERY_BUCKETS,
        )
        self.registry_outages = Counter(
            "abort_registry_outages",
            "Times a worker lost the abort registry (Redis); once per outage",
        )
        self.malformed_messages = Counter(
            "abort_malformed_messages",
            "Control-channel messages dropped because they were not valid",
        )
        self.requests = Counter(
            "abort_requests",
            "abort() calls by outcome status (aborted, revoked, finished, unconfirmed, error)",
            ["status"],
        )
        self.request_seconds = Histogram(
            "abort_request_seconds",
            "How long abort() took, by outcome status",
            ["status"],
            buckets=REQUEST_BUCKETS,
        )

    def abort_applied(self, event: events.AbortApplied) -> None:
        self.aborted_tasks.labels(event.task_name, event.phase).inc()
        if event.delivery is not None:
            self.delivery.labels(event.task_name).observe(event.delivery)

    def abort_requested(self, event: events.AbortRequested) -> None:
        self.requests.labels(event.status).inc()
        self.request_seconds.labels(event.status).observe(event.seconds)

    def abort_forced(self, task_name: str) -> None:
        self.forced_aborts.labels(task_name).inc()

    def registry_outage(self) -> None:
        self.registry_outages.inc()

    def malformed_message(self) -> None:
        self.malformed_messages.inc()


_metrics: AbortMetrics | None = None
_served: set[int] = set()


def enable() -> AbortMetrics:
    """The metrics, created once per process (prometheus-client's registry refuses a second
    set). Subscribe them with ``events.subscribe(enable())`` when not using
    ``AbortObservability``, which delegates to them for its broker only."""
    global _metrics
    if _metrics is None:
        _metrics = AbortMetrics()
    return _metrics


def serve(port: int, addr: str = "0.0.0.0") -> bool:
    """Expose the metrics over HTTP on a port of our own (when there is no
    ``PrometheusMiddleware``). In multiprocess mode every process's values are served, so with
    ``--workers N`` the first process to bind the port serves them all, as taskiq's does;
    ``False`` when the port is taken (by one of our other processes, usually)."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

    if port in _served:
        return True
    registry: Any = REGISTRY
    if _multiprocess_dir():
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        start_http_server(port=port, addr=addr, registry=registry)
    except OSError as exc:
        logger.debug("taskiq-abort: metrics server not started on %s:%s: %s", addr, port, exc)
        return False
    _served.add(port)
    return True


def write_textfile(path: str) -> None:
    """Write the aborter's metrics to ``path`` in Prometheus text format (atomically), for a
    one-shot process such as the CLI; node_exporter's textfile collector can serve it."""
    from prometheus_client import REGISTRY, write_to_textfile

    names = ["abort_requests_total", "abort_requests_created"]
    names += [f"abort_request_seconds{s}" for s in ("_bucket", "_count", "_sum", "_created")]
    write_to_textfile(path, REGISTRY.restricted_registry(names))


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def _check_mode() -> None:
    from prometheus_client import values

    if _multiprocess_dir() and values.ValueClass is values.MutexValue:
        logger.warning(
            "taskiq-abort: prometheus-client was imported before PROMETHEUS_MULTIPROC_DIR was "
            "set, so its values are per-process: metrics of other worker processes (taskiq's "
            "own included) will be missing. Build PrometheusMiddleware before anything imports "
            "prometheus_client."
        )
