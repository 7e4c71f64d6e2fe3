"""The admin CLI, driven as a real console script against a real Redis and real workers."""

from __future__ import annotations

import doctest
import json
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from taskiq.task import AsyncTaskiqTask

from taskiq_abort import TaskAbortedError
from taskiq_abort.cli import fmt
from taskiq_abort.outcome import RunningEntry, WorkerInfo
from tests.conftest import ROOT, Events
from tests.support.redis_servers import free_port

pytestmark = pytest.mark.anyio

BIN = Path(sys.executable).parent


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    command: list[str] | None = None,
    stdin: Any = subprocess.DEVNULL,
    pythonpath: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run the CLI (``python -m taskiq_abort.cli`` unless ``command`` says otherwise)."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TASKIQ_ABORT_") and k != "PYTHONPATH"
    }
    if pythonpath:
        base["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [*(command or [sys.executable, "-m", "taskiq_abort.cli"]), *args],
        env={**base, **(env or {})},
        cwd=ROOT,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def conn(redis_url: str, prefix: str) -> list[str]:
    return ["--redis-url", redis_url, "--prefix", prefix]


@pytest.fixture
def app_env(redis_url: str, prefix: str) -> dict[str, str]:
    """What ``--broker tests.app:broker`` needs to build the same broker as the workers."""
    return {"TASKIQ_ABORT_TEST_URL": redis_url, "TASKIQ_ABORT_TEST_PREFIX": prefix}


async def started(client, events: Events, name: str, *args: Any) -> str:
    """Send a task and wait until a worker runs it; its id."""
    task = await client.find_task(name).kiq(*args)
    events.wait(task.task_id, "started")
    return str(task.task_id)


# --- abort ------------------------------------------------------------------------------
async def test_abort_running_task(client, worker_factory, events: Events, conn) -> None:
    worker = worker_factory().start()
    task_id = await started(client, events, "sleeper", 60)

    proc = cli(*conn, task_id, "--reason", "runaway at 3 a.m.")

    assert proc.returncode == 0, proc.stderr
    shown_id, status, worker_id, elapsed, unit = proc.stdout.split()
    assert (shown_id, status, unit) == (task_id, "aborted", "ms")
    assert worker_id in worker.live_workers()
    assert float(elapsed) >= 0
    events.wait(task_id, "finally")
    result = await AsyncTaskiqTask(task_id, client.result_backend).wait_result(timeout=10)
    assert isinstance(result.error, TaskAbortedError)
    assert result.error.reason == "runaway at 3 a.m."


async def test_several_ids_at_once_json(client, worker_factory, events: Events, conn) -> None:
    worker_factory().start()
    first = await started(client, events, "sleeper", 60)
    second = await started(client, events, "sleeper", 60)
    never_sent = uuid.uuid4().hex

    proc = cli(*conn, "--json", first, never_sent, second, first)  # a repeated id counts once

    assert proc.returncode == 0, proc.stderr
    rows = json_lines(proc.stdout)
    assert [(r["task_id"], r["status"]) for r in rows] == [
        (first, "aborted"),
        (never_sent, "revoked"),
        (second, "aborted"),
    ]
    assert rows[0]["worker"] and rows[2]["worker"]
    assert all(isinstance(r["elapsed_ms"], float) for r in rows)
    events.wait(first, "finally")
    events.wait(second, "finally")


async def test_queued_task_revoked_through_broker(client, app_env) -> None:
    task = await client.find_task("quick").kiq(21)  # no worker: it stays queued

    proc = cli("--broker", "tests.app:broker", task.task_id, "--reason", "not today", env=app_env)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == [task.task_id, "revoked"]
    # --broker brings the result backend: the result is there now, with no worker running.
    result = await task.wait_result(timeout=10)
    assert isinstance(result.error, TaskAbortedError)
    assert result.error.reason == "not today"


async def test_finished_task_exits_1(client, worker_factory, app_env) -> None:
    worker_factory().start()
    task = await client.find_task("quick").kiq(5)
    assert (await task.wait_result(timeout=30)).return_value == 10

    proc = cli("--broker", "tests.app:broker", "--json", task.task_id, env=app_env)

    assert proc.returncode == 1, proc.stderr
    (row,) = json_lines(proc.stdout)
    assert row["status"] == "finished"
    assert (await task.wait_result(timeout=5)).return_value == 10  # untouched


async def test_unconfirmed_exits_1_and_shows_as_requested(
    client, worker_factory, events: Events, conn, rclient: redis.Redis, prefix: str
) -> None:
    worker = worker_factory().start()
    release = f"{prefix}:release"
    task_id = await started(client, events, "cli_blocker", release)
    try:
        # A sync task that never checks its token cannot confirm, whatever the timeout.
        waited = cli(*conn, task_id, "--timeout", "0.2", "--reason", "stuck")
        assert waited.returncode == 1, waited.stderr
        assert waited.stdout.split()[1:3] == ["unconfirmed", *worker.live_workers()]
        no_wait = cli(*conn, task_id, "--no-wait")
        assert no_wait.returncode == 1, no_wait.stderr
        assert no_wait.stdout.split()[1] == "unconfirmed"

        listed = cli(*conn, "ls")
        assert listed.returncode == 0, listed.stderr
        (line,) = [line for line in listed.stdout.splitlines() if task_id in line]
        name, _running_for, abort_state = line.split()[1:]
        assert (name, abort_state) == ("cli_blocker", "requested")
        (row,) = json_lines(cli(*conn, "ls", "--json").stdout)
        assert (row["task_id"], row["abort_requested"], row["abort_reason"]) == (
            task_id,
            True,
            "stuck",
        )

        status = cli(*conn, "status", task_id)
        assert status.returncode == 0, status.stderr
        assert "running: cli_blocker on worker" in status.stdout
        assert "reason: 'stuck' (waiting for the worker)" in status.stdout
    finally:
        rclient.rpush(release, "go")
    events.wait(task_id, "finished")


# --- ls and status ----------------------------------------------------------------------
async def test_ls_and_status(client, worker_factory, events: Events, conn) -> None:
    worker = worker_factory().start()
    (worker_id,) = worker.live_workers()
    sleepers = [await started(client, events, "sleeper", 60) for _ in range(2)]
    grouped = await started(client, events, "group_sleeper")

    listed = cli(*conn, "ls")

    assert listed.returncode == 0, listed.stderr
    out = listed.stdout.splitlines()
    assert all(len(line) <= 80 for line in out), listed.stdout
    assert out[0].startswith(f"worker {worker_id}  ")
    assert out[0].endswith("3 tasks")
    assert out[1].split() == ["TASK", "ID", "NAME", "RUNNING", "ABORT"]
    rows = {line.split()[0]: line.split()[1:] for line in out[2:5]}
    assert {k: (v[0], v[2]) for k, v in rows.items()} == {
        sleepers[0]: ("sleeper", "-"),
        sleepers[1]: ("sleeper", "-"),
        grouped: ("group_sleeper", "-"),
    }
    assert out[-1] == "3 running tasks, 1 live worker"

    only = json_lines(cli(*conn, "ls", "--json", "--name", "group_sleeper").stdout)
    assert [(r["task_id"], r["task_name"], r["worker"]) for r in only] == [
        (grouped, "group_sleeper", worker_id)
    ]
    assert only[0]["pid"] in worker.child_pids()
    assert only[0]["abort_requested"] is False
    by_worker = cli(*conn, "ls", "--json", "--worker", worker_id[:-3])
    assert len(json_lines(by_worker.stdout)) == 3
    nobody = cli(*conn, "ls", "--worker", "no-such-worker")
    assert (nobody.returncode, nobody.stdout.split()[:3]) == (0, ["no", "live", "worker"])

    running = cli(*conn, "status", sleepers[0], "--json")
    assert running.returncode == 0, running.stderr
    state = json.loads(running.stdout)
    assert (state["state"], state["running"]["worker"], state["abort_request"]) == (
        "running",
        worker_id,
        None,
    )
    assert cli(*conn, sleepers[0]).returncode == 0
    aborted = cli(*conn, "status", sleepers[0])
    assert aborted.returncode == 0, aborted.stderr
    assert aborted.stdout.splitlines()[1] == f"  aborted: cancelled on worker {worker_id}"

    unknown = cli(*conn, "status", uuid.uuid4().hex)
    assert unknown.returncode == 1
    assert "not known" in unknown.stdout
    unknown_json = json.loads(cli(*conn, "status", "--json", "nope").stdout)
    assert unknown_json["state"] == "unknown"


async def test_status_through_broker_sees_results(client, worker_factory, app_env) -> None:
    worker_factory().start()
    task = await client.find_task("quick").kiq(1)
    await task.wait_result(timeout=30)

    proc = cli("--broker", "tests.app:broker", "status", task.task_id, "--json", env=app_env)

    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["state"] == "finished"


# --- bulk abort by name -----------------------------------------------------------------
async def test_bulk_abort_by_name(client, worker_factory, events: Events, conn) -> None:
    worker_factory().start()
    sleepers = [await started(client, events, "sleeper", 60) for _ in range(3)]
    grouped = await started(client, events, "group_sleeper")

    refused = cli(*conn, "--name", "sleeper")  # stdin is not a terminal and no --yes

    assert refused.returncode == 2
    assert "pass --yes" in one_error_line(refused)
    assert all("finally" not in events.all(t) for t in sleepers)

    proc = cli(*conn, "--name", "sleeper", "--yes", "--reason", "bad deploy")

    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sorted((line.split()[0], line.split()[1]) for line in lines[:3]) == sorted(
        (t, "aborted") for t in sleepers
    )
    assert lines[3] == "aborted 3 of 3 running tasks named 'sleeper' on 1 worker"
    for task_id in sleepers:
        events.wait(task_id, "finally")
    remaining = json_lines(cli(*conn, "ls", "--json").stdout)
    assert [r["task_id"] for r in remaining] == [grouped]

    none_left = cli(*conn, "--name", "sleeper", "--yes")
    assert none_left.returncode == 0
    assert "nothing to abort" in none_left.stderr

    # On a terminal it asks; "n" aborts nothing (exit 1), "y" goes ahead.
    for answer, code in (("n", 1), ("y", 0)):
        leader, follower = pty.openpty()
        try:
            os.write(leader, f"{answer}\n".encode())
            asked = cli(*conn, "--name", "group_sleeper", stdin=follower)
        finally:
            os.close(follower)
            os.close(leader)
        assert asked.returncode == code, asked.stderr
        assert "Abort 1 running task named 'group_sleeper' on 1 worker? [y/N]" in asked.stderr
    events.wait(grouped, "child-finally-1")


# --- the installed entry points ---------------------------------------------------------
async def test_console_script_and_taskiq_plugin(client, redis_url: str, prefix: str) -> None:
    first = await client.find_task("quick").kiq(1)
    second = await client.find_task("quick").kiq(2)

    script = cli(
        "--prefix", prefix, first.task_id,
        command=[str(BIN / "taskiq-abort")],
        env={"TASKIQ_ABORT_REDIS_URL": redis_url},  # the default of --redis-url
    )  # fmt: skip
    plugin = cli(
        "abort", "--json", "--redis-url", redis_url, "--prefix", prefix, second.task_id,
        command=[str(BIN / "taskiq")],
    )  # fmt: skip

    assert script.returncode == 0, script.stderr
    assert script.stdout.split()[:2] == [first.task_id, "revoked"]
    assert plugin.returncode == 0, plugin.stderr
    assert json_lines(plugin.stdout)[0]["status"] == "revoked"
    helped = cli("abort", "--help", command=[str(BIN / "taskiq")])
    assert helped.returncode == 0
    assert helped.stdout.startswith("usage: taskiq abort ")
    assert "exit status:" in helped.stdout


# --- exit status 2: usage, invalid ids, Redis unreachable, broker not loadable ----------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give task ids to abort"),
        (["abc", "--name", "sleeper"], "not both"),
        (["abc", "--timeout", "-1"], "must be a finite number >= 0"),
        (["ls", "--reason", "x"], "unrecognized arguments: --reason"),
        (["status"], "the following arguments are required: TASK_ID"),
    ],
)
def test_usage_errors_exit_2(conn, args: list[str], message: str) -> None:
    proc = cli(*conn, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("", "it is empty"),
        ("x" * 257, "longer than 256 characters"),
        ("abc\ndef", "control characters"),
        ("abc\x7f", "control characters"),
    ],
)
def test_invalid_ids_are_refused_before_anything_is_sent(
    conn, rclient: redis.Redis, prefix: str, bad: str, message: str
) -> None:
    proc = cli(*conn, "valid-id", bad)

    assert proc.returncode == 2
    assert message in one_error_line(proc)
    assert rclient.keys(f"{prefix}:*") == []  # not even the valid id was recorded
    assert cli(*conn, "status", bad).returncode == 2


@pytest.mark.parametrize(
    "args", [["some-id"], ["ls"], ["status", "some-id"], ["--name", "x", "--yes"]]
)
def test_unreachable_redis_exits_2_without_the_password(args: list[str]) -> None:
    url = f"redis://admin:s3cret-pw@127.0.0.1:{free_port()}/0"  # nobody listens there

    proc = cli("--redis-url", url, *args)

    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "cannot reach Redis at redis://admin:***@127.0.0.1:" in line
    assert "s3cret-pw" not in proc.stderr + proc.stdout


def test_debug_shows_the_traceback() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    proc = cli("--redis-url", url, "--debug", "ls")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    assert "AbortBackendUnavailableError" in proc.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["ls"], False, "nowhere to connect"),
        (["--broker", "tests.app:broker", "ls"], False, "cannot load broker 'tests.app:broker'"),
        (["--broker", "no_such_module:broker", "ls"], True, "ModuleNotFoundError"),
        (["--broker", "tests.app", "ls"], True, "expected module:variable"),
        (["--broker", "tests.app:make_broker", "ls"], True, "TypeError"),
        (["--broker", "tests.app:events_key", "ls"], True, "TypeError"),
        (["--broker", "tests.app:ROOT", "ls"], True, "AttributeError"),
        (["--broker", "tests.app:broker", "--redis-url", "redis://x", "ls"], True, "not both"),
        (["--broker", "tests.app:broker", "--prefix", "other", "ls"], True, "contradicts"),
        (["--redis-url", "http://nope", "ls"], False, "bad Redis URL"),
    ],
)
def test_connection_errors_exit_2(app_env, args: list[str], env: bool, message: str) -> None:
    proc = cli(*args, env=app_env if env else None)
    assert proc.returncode == 2
    assert message in one_error_line(proc)


def test_broker_without_redis_abort_backend_exits_2(tmp_path: Path) -> None:
    (tmp_path / "memapp.py").write_text(
        "from taskiq import InMemoryBroker\n"
        "from taskiq_abort import AbortMiddleware\n"
        "def make():\n"
        "    return InMemoryBroker().with_middlewares(AbortMiddleware())\n"
        "plain = InMemoryBroker()\n"
    )
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    memory = cli("--broker", "memapp:make", "ls", env=env)  # a factory function is called
    assert memory.returncode == 2
    assert "no Redis URL" in one_error_line(memory)
    plain = cli("--broker", "memapp:plain", "ls", env=env)
    assert plain.returncode == 2
    assert "has no AbortMiddleware" in one_error_line(plain)


async def test_broker_from_current_directory(client, worker_factory, events, app_env) -> None:
    """--broker finds the app's module in the current directory, like `taskiq worker`."""
    worker_factory().start()
    task_id = await started(client, events, "sleeper", 60)

    # The installed script, no PYTHONPATH: only the cwd (the repo root) has tests.app.
    proc = cli(
        "--broker", "tests.app:broker", "ls", "--json",
        command=[str(BIN / "taskiq-abort")], env=app_env, pythonpath=False,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stderr
    assert [r["task_id"] for r in json_lines(proc.stdout)] == [task_id]


# --- rendering, in-process --------------------------------------------------------------
def test_fmt_doctests() -> None:
    failures, _ = doctest.testmod(fmt)
    assert failures == 0


def test_ls_fits_80_columns_with_long_names() -> None:
    now = 1_000_000.0
    worker = WorkerInfo("somehost-123-abcdef", "somehost", 123, now - 90_000)
    entries = [
        RunningEntry(uuid.uuid4().hex, "reports.generate_quarterly_pdf_for_every_customer", "r", 0),
        RunningEntry(uuid.uuid4().hex, "x", "r", now - 5),
    ]
    rows = [fmt.Row(entries[0], worker, None), fmt.Row(entries[1], worker, None)]

    lines = fmt.ls_lines([worker], rows, now, show_idle=True)

    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    assert "reports.generate_quar…" in lines[2]
    assert lines[2].split()[-2:] == ["11d13h", "-"]
    assert lines[0] == "worker somehost-123-abcdef  somehost pid 123  up 1d01h  2 tasks"
