"""A rolling deploy: workers and aborters of the previous release and of this one, paired both
ways on one Redis. Each side runs in its own interpreter with its own installed taskiq_abort;
.ci/run installs the previous release (docs/versioning.md names it) and points
``TASKIQ_ABORT_PREVIOUS_PYTHON`` at that interpreter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import WorkerProcess

PREVIOUS = os.environ.get("TASKIQ_ABORT_PREVIOUS_PYTHON")
pytestmark = pytest.mark.skipif(
    not PREVIOUS,
    reason="set TASKIQ_ABORT_PREVIOUS_PYTHON to a Python with the previous release installed "
    "(.ci/run does)",
)
APP = Path(__file__).parent / "rolling"


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """The pair's app, alone in a directory: whichever Python runs it imports its own package."""
    for name in ("rolling_app.py", "rolling_client.py"):
        shutil.copy(APP / name, tmp_path / name)
    return tmp_path


def _env(url: str, prefix: str, app_dir: Path) -> dict[str, str]:
    return {**os.environ, "ROLLING_URL": url, "ROLLING_PREFIX": prefix, "PYTHONPATH": str(app_dir)}


def _client(python: str, step: str, env: dict[str, str], app_dir: Path) -> dict[str, object]:
    done = subprocess.run(
        [python, "rolling_client.py", step],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


@pytest.fixture
def versions(app_dir: Path) -> dict[str, str]:
    """Which release each interpreter runs, asked of the interpreters themselves."""
    found = {}
    for name, python in (("previous", PREVIOUS or ""), ("current", sys.executable)):
        out = subprocess.run(
            [python, "-c", "import taskiq_abort; print(taskiq_abort.__version__)"],
            cwd=app_dir,
            capture_output=True,
            text=True,
            check=True,
        )
        found[name] = out.stdout.strip()
    assert found["previous"] != found["current"], found
    return found


@pytest.mark.parametrize("worker_side", ["previous", "current"])
def test_a_worker_and_an_aborter_of_two_releases_work_together(
    worker_side: str,
    versions: dict[str, str],
    app_dir: Path,
    redis_url: str,
    prefix: str,
    rclient: redis.Redis,
) -> None:
    pythons = {"previous": PREVIOUS or "", "current": sys.executable}
    aborter = pythons["current" if worker_side == "previous" else "previous"]
    env = _env(redis_url, prefix, app_dir)

    queued = _client(aborter, "queued", env, app_dir)  # before any worker serves the queue
    assert queued["queued"] == "revoked", queued

    worker = WorkerProcess(
        redis_url, prefix, app="rolling_app:broker", python=pythons[worker_side], cwd=app_dir
    )
    worker.env.update(env)
    worker.start()
    try:
        running = _client(aborter, "running", env, app_dir)
    finally:
        worker.stop()
    # The queue is first in, first out: the revoked task came first and never started.
    assert running["first_started"] == "running", running
    assert rclient.lrange(f"{prefix}:started", 0, -1) == [], "the revoked task started"
    assert (running["running"], running["running_error"]) == ("aborted", "TaskAbortedError")
