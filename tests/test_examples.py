"""The examples as their docstrings say to run them, against a real ``taskiq worker`` and the
suite's Redis: the quick start, the sync task, the FastAPI app (a real ``uvicorn``, driven over
HTTP), the ways of stopping a task, and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, WorkerProcess
from tests.support.redis_servers import free_port
from tests.web_server import UvicornProcess

TOKEN = "example-" + uuid.uuid4().hex


@pytest.fixture
def example(redis_url: str) -> Iterator[str]:
    db = f"{redis_url.rsplit('/', 1)[0]}/3"  # a database of its own: the example's names are fixed
    env = {**os.environ, "REDIS_URL": db, "ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    worker = WorkerProcess(db, "reports", env=env)
    worker.args[worker.args.index("tests.app:broker")] = "examples.fastapi_app:broker"
    port = free_port()
    server = UvicornProcess(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--port", str(port)],
        env,
        port,
    )
    with worker, server:
        yield server.base


def until(check: Any, what: str, timeout: float = 30.0) -> Any:
    """Ask the app again until ``check()`` is truthy, as a client polling a status page would."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)
    return value


def test_start_abort_and_report_a_long_task(example: str) -> None:
    with httpx.Client(base_url=example, timeout=30) as http:
        task_id = http.post("/reports").json()["task_id"]
        state = until(
            lambda: (s := http.get(f"/reports/{task_id}").json())["state"] == "running" and s,
            "the report never ran",
        )
        assert state["worker"]

        outcome = http.post(f"/reports/{task_id}/abort", params={"reason": "user left"}).json()
        assert outcome["status"] == "aborted" and outcome["reason"] == "user left"

        final = http.get(f"/reports/{task_id}").json()
        assert final == {"task_id": task_id, "state": "aborted", "reason": "user left"}

        short = http.post("/reports", params={"pages": 0}).json()["task_id"]
        done = until(
            lambda: (s := http.get(f"/reports/{short}").json())["state"] == "done" and s,
            "the short report never finished",
        )
        assert done["result"] == "0 pages"
        assert http.post(f"/reports/{short}/abort").json()["status"] == "finished"

        assert http.post(f"/reports/{'x' * 300}/abort").status_code == 422


def test_operator_router_is_mounted_behind_the_apps_auth(example: str) -> None:
    with httpx.Client(base_url=example, timeout=30) as http:
        assert http.get("/admin/tasks/tasks").status_code == 401
        assert http.get("/admin/tasks/").status_code == 401
        admin = {"Authorization": f"Bearer {TOKEN}"}
        task_id = http.post("/reports").json()["task_id"]
        listed = until(
            lambda: http.get("/admin/tasks/tasks", headers=admin).json()["tasks"],
            "the running report never showed in /admin/tasks/tasks",
        )
        assert [t["task_id"] for t in listed] == [task_id]
        assert listed[0]["task_name"] == "build_report"
        page = http.get("/admin/tasks/", headers=admin)
        assert page.status_code == 200 and "static/dashboard.js" in page.text
        outcome = http.post(
            f"/admin/tasks/tasks/{task_id}/abort", headers=admin, json={"reason": "ops"}
        ).json()
        assert outcome["status"] == "aborted"
        assert http.get(f"/reports/{task_id}").json()["reason"] == "ops"


def run_module(module: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    """``python3 -m module`` from the checkout, as the docs say to run it; its output."""
    proc = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_the_stopping_example_runs_as_its_docstring_says() -> None:
    """examples/stopping.py: graceful, forced, an interrupted sync loop, many at once."""
    stdout = run_module("examples.stopping")
    lines = [line.strip() for line in stdout.splitlines() if line.startswith("   -> ")]
    assert lines == [
        "-> aborted, forced=False",
        "-> aborted, forced=True",
        "-> aborted; stored result: TaskAbortedError",
        "-> ['aborted', 'aborted', 'aborted', 'aborted', 'aborted']",
    ], stdout


@pytest.mark.parametrize(
    ("module", "db"), [("examples.quickstart", 4), ("examples.sync_tasks", 5)]
)  # a database of its own each: the examples use taskiq's default queue and prefix
def test_a_worker_and_a_script_as_the_docs_show(redis_url: str, module: str, db: int) -> None:
    url = f"{redis_url.rsplit('/', 1)[0]}/{db}"
    env = {**os.environ, "REDIS_URL": url, "PYTHONPATH": str(ROOT)}
    with WorkerProcess(url, "taskiq_abort", env=env, app=f"{module}:broker") as worker:
        (child,) = worker.child_pids()
        stdout = run_module(module, env)
        # aborted when the worker had started it within the script's second, else revoked
        assert stdout.split()[0] in ("aborted", "revoked"), stdout
        assert worker.child_pids() == [child]  # the worker process was never restarted


def test_the_sync_example_keeps_an_idle_worker_alive() -> None:
    """redis-py 8's default socket timeout ends the list broker's blocking read after 5 s, and
    taskiq restarts the worker process: the example turns it off."""
    from examples.sync_tasks import broker

    assert broker.connection_pool.connection_kwargs["socket_timeout"] is None


def test_the_demo_runs() -> None:
    stdout = run_module("examples.demo", timeout=120)
    assert "abort() -> aborted by" in stdout
    assert "abort() -> revoked" in stdout
