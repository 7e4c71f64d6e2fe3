"""Aborts in Prometheus, for real: ``taskiq worker --workers 2`` with taskiq's
``PrometheusMiddleware`` and ours, scraped over HTTP before and after aborts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from taskiq_abort import AbortStatus, TaskAbortedError
from taskiq_abort.observability.progress import ABORTED
from tests.conftest import ROOT, Events, WorkerProcess
from tests.obs_app import make_broker

pytestmark = pytest.mark.anyio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str):
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_scrapable(port: int, worker: WorkerProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            scrape(port)
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                log = worker.log.read_text()[-3000:]
                raise TimeoutError(f"no metrics on {port}; log: {log}") from exc
            time.sleep(0.05)  # the first worker process binds the port when it starts


def client_value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("order", ["prometheus_first", "abort_first", "own_port"])
@pytest.mark.timeout(180)
async def test_counters_across_two_worker_processes(
    redis_url: str, prefix: str, events: Events, tmp_path: Path, order: str
) -> None:
    port = free_port()
    worker = WorkerProcess(
        redis_url,
        prefix,
        workers=2,
        env={
            "OBS_METRICS_DIR": str(tmp_path / "prom"),
            "OBS_METRICS_PORT": str(port),
            "OBS_ORDER": order,
        },
    )
    worker.args[4] = "tests.obs_app:broker"
    client = make_broker(redis_url, prefix)  # no PrometheusMiddleware in the test process
    await client.startup()
    try:
        worker.start()
        wait_scrapable(port, worker)
        before = scrape(port)
        requests_before = client_value("abort_requests_total", status="aborted")

        # Start tasks one by one until both worker processes run at least one.
        sleeper = client.find_task("obs_sleeper")
        tasks, pids = [], set()
        while len(pids) < 2:
            assert len(tasks) < 40, f"every task went to one process: {pids}"
            task = await sleeper.kiq()
            tasks.append(task)
            events.wait(task.task_id, "started")
            pids.update(e for e in events.all(task.task_id) if e.startswith("pid-"))

        outcomes = [await task.abort(reason="operator pressed stop") for task in tasks]
        assert {o.status for o in outcomes} == {AbortStatus.ABORTED}
        failing = await client.find_task("obs_fail").kiq()
        assert (await failing.wait_result(timeout=30)).is_err

        after = scrape(port)
        n = len(tasks)

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        # Ours, summed over both processes by the multiprocess collector.
        assert delta("aborted_tasks_total", task_name="obs_sleeper", phase="running") == n
        assert delta("abort_delivery_seconds_count", task_name="obs_sleeper") == n
        assert delta("abort_malformed_messages_total") == 0
        assert delta("abort_registry_outages_total") == 0
        # taskiq's own, in the same scrape: aborts are not errors, real failures still are.
        if order == "own_port":  # no PrometheusMiddleware: only ours are served
            assert value(after, "received_tasks_total", task_name="obs_sleeper") == 0
        else:
            assert delta("received_tasks_total", task_name="obs_sleeper") == n
            assert delta("found_errors_total", task_name="obs_sleeper") == 0
            assert delta("success_tasks_total", task_name="obs_sleeper") == 0
            assert delta("execution_time_count", task_name="obs_sleeper") == n
            assert delta("found_errors_total", task_name="obs_fail") == 1
            assert delta("received_tasks_total", task_name="obs_fail") == 1
        # The aborter's side, in this process's registry.
        assert client_value("abort_requests_total", status="aborted") - requests_before == n
        assert client_value("abort_request_seconds_count", status="aborted") >= n

        # Progress, read back through RedisAsyncResultBackend.
        progress = await tasks[0].get_progress()
        assert progress is not None
        assert progress.state == ABORTED
        assert progress.meta["reason"] == "operator pressed stop"
        assert progress.meta["phase"] == "running"
        result = await tasks[0].wait_result(timeout=10)
        assert isinstance(result.error, TaskAbortedError)

        # Logs: one INFO line per applied abort, none of taskiq's error lines for them.
        log = worker.log.read_text()
        for task in tasks:
            assert log.count(f"aborted task {task.task_id} (obs_sleeper) while running") == 1
        assert "Exception found while executing function: task" not in log
    finally:
        worker.stop()
        await client.shutdown()


def test_cli_and_package_imports_leave_prometheus_client_alone() -> None:
    """``taskiq worker`` imports our CLI plugin before it starts the worker processes: nothing
    on that chain (nor the metrics module itself) may import prometheus-client."""
    code = (
        "import sys, taskiq_abort, taskiq_abort.cli, taskiq_abort.observability.metrics, "
        "taskiq_abort.observability.middleware, taskiq_abort.observability.progress\n"
        "assert 'prometheus_client' not in sys.modules, 'imported prometheus_client'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_taskiq_entry_points_leave_prometheus_client_alone() -> None:
    """What ``taskiq worker`` itself loads before it forks: every ``taskiq_cli`` plugin."""
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "for ep in entry_points(group='taskiq_cli'): ep.load()\n"
        "assert 'prometheus_client' not in sys.modules, 'imported prometheus_client'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


async def test_cli_writes_its_metrics(
    client, worker_factory, events: Events, tmp_path: Path, redis_url: str, prefix: str
) -> None:
    """``taskiq-abort ID... --metrics FILE``: the aborter's metrics of a one-shot run."""
    from tests.test_cli import cli, started

    worker_factory().start()
    task_id = await started(client, events, "sleeper", 60)
    path = tmp_path / "abort.prom"

    proc = cli(
        "--redis-url", redis_url, "--prefix", prefix, task_id, "never-sent", "--metrics", str(path)
    )

    assert proc.returncode == 0, proc.stderr
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(path.read_text())
        for s in family.samples
    }
    assert samples[("abort_requests_total", frozenset({("status", "aborted")}))] == 1
    assert samples[("abort_requests_total", frozenset({("status", "revoked")}))] == 1
    assert samples[("abort_request_seconds_count", frozenset({("status", "aborted")}))] == 1
    assert not any(name.startswith(("python_", "process_")) for name, _ in samples)
