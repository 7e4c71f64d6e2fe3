"""What users type reaches what runs: bare task names, a worker that is not there, a mistyped
id. Real ``taskiq-abort`` runs against a real worker and Redis."""

from __future__ import annotations

import pytest
from taskiq.kicker import AsyncKicker

from tests.conftest import Events
from tests.test_cli import cli, conn, json_lines, one_error_line

__all__ = ["conn"]  # the fixture

pytestmark = pytest.mark.anyio

FULL = "tests.names_app:crunch"


async def kick_running(client, events: Events, name: str) -> str:
    task = await AsyncKicker(name, client, labels={}).kiq()
    events.wait(task.task_id, "started")
    return str(task.task_id)


async def test_a_bare_name_matches_module_function(client, worker_factory, events, conn) -> None:
    worker_factory(app="tests.names_app:broker").start()
    task_id = await kick_running(client, events, FULL)

    listed = json_lines(cli(*conn, "ls", "--name", "crunch", "--json").stdout)
    assert [(r["task_id"], r["task_name"]) for r in listed] == [(task_id, FULL)]

    proc = cli(*conn, "--name", "crunch", "--yes")

    assert proc.returncode == 0, proc.stderr
    first, summary = proc.stdout.splitlines()
    assert first.split()[:2] == [task_id, "aborted"]
    assert summary == f"aborted 1 of 1 running task named '{FULL}' on 1 worker"
    events.wait(task_id, "finally")


async def test_an_ambiguous_bare_name_aborts_nothing(client, worker_factory, events, conn) -> None:
    worker_factory(app="tests.names_app:broker").start()
    ours = await kick_running(client, events, FULL)
    theirs = await kick_running(client, events, "other:crunch")

    proc = cli(*conn, "--name", "crunch", "--yes")

    assert proc.returncode == 2
    assert f"'other:crunch', '{FULL}': give the full name" in one_error_line(proc)
    running = {r["task_id"] for r in json_lines(cli(*conn, "ls", "--json").stdout)}
    assert running == {ours, theirs}


async def test_nothing_of_that_name_lists_what_runs(client, worker_factory, events, conn) -> None:
    worker_factory(app="tests.names_app:broker").start()
    await kick_running(client, events, FULL)

    proc = cli(*conn, "--name", "crnch", "--yes")

    assert proc.returncode == 0
    assert proc.stderr.splitlines() == [
        f"no running task named 'crnch' (prefix '{conn[-1]}'); nothing to abort",
        f"running now: {FULL}",
    ]
    listed = cli(*conn, "ls", "--name", "nope")
    assert listed.returncode == 0
    assert listed.stdout == "0 running tasks named 'nope', 1 live worker\n"  # no blank line


async def test_ls_for_a_worker_that_is_not_there_names_the_live_ones(worker_factory, conn) -> None:
    worker = worker_factory().start()
    (live,) = worker.live_workers()

    proc = cli(*conn, "ls", "--worker", "nope")

    assert proc.returncode == 0
    assert proc.stdout == f"no live worker whose id starts with 'nope'; live: {live}\n"


async def test_a_mistyped_id_is_revoked_and_says_no_worker_had_it(conn) -> None:
    proc = cli(*conn, "0123456789abcdef0123456789abcdeX")

    assert proc.returncode == 0  # revoked: it will never start (documented)
    assert proc.stdout.split()[1] == "revoked"
    assert proc.stderr.startswith("note: no worker was running the revoked task: queued, or ")
    assert "never sent (check the id)" in proc.stderr and "kept for 1d00h" in proc.stderr
