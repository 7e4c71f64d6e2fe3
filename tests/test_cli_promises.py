"""What docs/cli.md and ``taskiq-abort --help`` promise about output and exit status, run as a
real process against a real Redis and real workers (issue 14, points 3 and 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import redis
from taskiq import AsyncBroker

from taskiq_abort import find_middleware
from tests.conftest import ROOT, Events, WorkerProcess
from tests.faultkit import apoll
from tests.test_cli import cli, json_lines, started

pytestmark = pytest.mark.anyio


@pytest.fixture
def conn(redis_url: str, prefix: str) -> list[str]:
    return ["--redis-url", redis_url, "--prefix", prefix]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKIQ_ABORT_")}
    return {**env, "PYTHONPATH": str(ROOT)}


def cli_to_a_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI writing to a pipe whose reader has already gone, as `... | head` leaves it."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE
    try:
        return subprocess.run(
            [sys.executable, "-m", "taskiq_abort.cli", *args],
            env=_env(),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


async def test_json_no_wait_reports_the_first_stored_reason(
    client: AsyncBroker,
    worker_factory: type[WorkerProcess],
    events: Events,
    conn: list[str],
    rclient: redis.Redis,
    prefix: str,
) -> None:
    """docs/cli.md's example: a second abort without --reason reports the first one's."""
    worker_factory().start()
    release = f"{prefix}:release"
    task_id = await started(client, events, "cli_blocker", release)
    try:
        first = cli(*conn, "--timeout", "0.2", "--reason", "stuck in C code", task_id)
        assert first.returncode == 1, first.stderr
        second = cli(*conn, "--json", "--no-wait", task_id)
        assert second.returncode == 1, second.stderr
        (row,) = json_lines(second.stdout)
        assert (row["status"], row["reason"]) == ("unconfirmed", "stuck in C code")
        assert sorted(row) == [
            "descendants", "elapsed_ms", "forced", "reason", "status", "task_id", "worker"
        ]  # fmt: skip
    finally:
        rclient.rpush(release, "go")
    events.wait(task_id, "finished")


async def test_a_reader_that_leaves_early_does_not_change_the_exit_status(
    client: AsyncBroker, worker_factory: type[WorkerProcess], events: Events, conn: list[str]
) -> None:
    """`taskiq-abort ls | head`: 0 as documented for ls (it used to be 1), no error output;
    an abort's status is still its outcomes' (a revoked id: 0)."""
    worker_factory().start()
    running = await started(client, events, "sleeper", 60)
    for args in (["ls"], ["ls", "--json"], ["status", running]):
        proc = cli_to_a_closed_pipe(*conn, *args)
        assert (proc.returncode, proc.stderr) == (0, ""), args
    never_sent = "0123456789abcdef0123456789abcdef"
    proc = cli_to_a_closed_pipe(*conn, "--json", never_sent)
    assert proc.returncode == 0  # no error: only the note that no worker had it
    assert proc.stderr.startswith("note: no worker was running the revoked task"), proc.stderr
    record = await find_middleware(client).backend.get_request(never_sent)
    assert record is not None and record.outcome == "revoked"  # the abort itself did happen


async def test_ctrl_c_exits_130_and_the_request_stays(
    client: AsyncBroker,
    worker_factory: type[WorkerProcess],
    events: Events,
    conn: list[str],
    rclient: redis.Redis,
    prefix: str,
) -> None:
    """Ctrl-C while waiting for a confirmation: exit 130, one line on stderr, and the abort
    request already sent stays recorded (the task still cannot start again)."""
    worker_factory().start()
    release = f"{prefix}:release"
    task_id = await started(client, events, "cli_blocker", release)
    backend = find_middleware(client).backend
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskiq_abort.cli", *conn, "--timeout", "60", task_id],
        env=_env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Sent: it now waits for a worker that will never confirm (the task ignores its token).
        await apoll(lambda: backend.get_request(task_id), 30, "the CLI's abort request")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        # Read while the task still runs: once released it finishes and settles the request.
        record = await backend.get_request(task_id)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        rclient.rpush(release, "go")
    assert proc.returncode == 130, (stdout, stderr)
    assert stderr.strip() == "taskiq-abort: interrupted", stderr
    assert record is not None and record.outcome is None  # still requested
    events.wait(task_id, "finished")
