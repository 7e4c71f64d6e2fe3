"""The CLI's label surfaces with real workers (``tests/labels_app.py``, a ListQueueBroker, two
worker processes): ``ls --label``, ``--label NAME=VALUE --yes`` (abort and rule) and
``--cascade``."""

from __future__ import annotations

import asyncio

import pytest
import redis
from taskiq.task import AsyncTaskiqTask

from taskiq_abort import TaskAbortedError, abort_rules, abort_where
from tests.conftest import Events, WorkerProcess
from tests.faultkit import started
from tests.labels_app import make_labels_broker
from tests.matrix import wait_event
from tests.test_abort_where_worker import fan_out_running, kick, probe
from tests.test_cli import cli, json_lines

pytestmark = pytest.mark.anyio


async def test_ls_label_abort_by_label_and_cascade(
    list_worker: WorkerProcess, redis_url: str, prefix: str, rclient: redis.Redis, events: Events
) -> None:
    conn = ["--redis-url", redis_url, "--prefix", prefix]
    async with started(make_labels_broker("list", redis_url, prefix)) as client:
        await probe(client, events)
        acme = [await kick(client, "gate", "acme") for _ in range(3)]
        zeta = await kick(client, "gate", "zeta")
        for task in (*acme, zeta):
            await wait_event(events, task.task_id, "started")

        listed = await asyncio.to_thread(cli, "ls", "--label", "tenant=acme", "--json", *conn)
        assert listed.returncode == 0, listed.stderr
        assert {row["task_id"] for row in json_lines(listed.stdout)} == {t.task_id for t in acme}

        refused = await asyncio.to_thread(cli, "--label", "tenant=acme", *conn)  # no --yes
        assert refused.returncode != 0 and "--yes" in refused.stderr
        assert await abort_rules(client) == []  # nothing recorded without confirmation

        done = await asyncio.to_thread(
            cli, "--label", "tenant=acme", "--reason", "gone", "--yes", "--json", *conn
        )
        assert done.returncode == 0, done.stderr
        rows = json_lines(done.stdout)
        assert {r["task_id"] for r in rows} == {t.task_id for t in acme}
        assert {r["status"] for r in rows} == {"aborted"}
        (rule,) = await abort_rules(client)
        assert rule.labels == {"tenant": "acme"} and rule.rule_id in done.stderr
        later = await kick(client, "quick", "acme")
        result = await later.wait_result(timeout=30)
        assert isinstance(result.error, TaskAbortedError) and events.all(later.task_id) == []
        assert events.all(zeta.task_id) == ["started"]  # untouched
        rclient.rpush(f"{prefix}:release:{zeta.task_id}", 1)

        parent, children = await fan_out_running(client, events, rclient, prefix, 2)
        cascaded = await asyncio.to_thread(cli, parent.task_id, "--cascade", "--json", *conn)
        assert cascaded.returncode == 0, cascaded.stderr
        (row,) = json_lines(cascaded.stdout)
        assert (row["status"], row["descendants"]) == ("aborted", 2)
        for child in children:
            stopped = await AsyncTaskiqTask(child, client.result_backend).wait_result(timeout=30)
            assert isinstance(stopped.error, TaskAbortedError)

        bad = await asyncio.to_thread(cli, "--label", "tenant", "--yes", *conn)
        assert bad.returncode == 2 and "NAME=VALUE" in bad.stderr


async def test_rules_lists_and_cancels(redis_url: str, prefix: str) -> None:
    """``rules`` lists the rules in force, soonest to expire first (text and JSON); ``rules
    --cancel`` removes them (1 when one was not found); an invalid id is refused before
    anything is sent."""
    conn = ["--redis-url", redis_url, "--prefix", prefix]
    empty = await asyncio.to_thread(cli, "rules", *conn)
    assert empty.returncode == 0 and "no abort rules in force" in empty.stdout, empty.stderr
    async with started(make_labels_broker("list", redis_url, prefix)) as client:
        later = await abort_where(client, {"tenant": "acme"}, reason="account deleted", ttl=600)
        sooner = await abort_where(client, {"tenant": "zeta"}, task_name="gate", ttl=60)
        ids = [sooner.rule.rule_id, later.rule.rule_id]

        listed = await asyncio.to_thread(cli, "rules", *conn)
        assert listed.returncode == 0, listed.stderr
        header, *lines = listed.stdout.splitlines()
        assert header.split() == ["RULE", "LEFT", "MATCHES", "REASON"]
        assert [line.split()[0] for line in lines] == ids
        assert "tenant=zeta, name=gate" in lines[0]
        assert "tenant=acme" in lines[1] and "account deleted" in lines[1]
        as_json = await asyncio.to_thread(cli, "rules", "--json", *conn)
        assert [r["rule_id"] for r in json_lines(as_json.stdout)] == ids
        assert json_lines(as_json.stdout)[1]["labels"] == {"tenant": "acme"}

        one = await asyncio.to_thread(cli, "rules", "--cancel", ids[1], "--json", *conn)
        assert one.returncode == 0, one.stderr
        assert json_lines(one.stdout) == [{"rule_id": ids[1], "cancelled": True}]
        assert [r.rule_id for r in await abort_rules(client)] == [ids[0]]

        both = await asyncio.to_thread(cli, "rules", "--cancel", ids[1], ids[0], *conn)
        assert both.returncode == 1, both.stderr
        assert both.stdout.splitlines() == [
            f"rule {ids[1]}: not found (expired, or cancelled already)",
            f"rule {ids[0]}: cancelled",
        ]
        assert await abort_rules(client) == []

        bad = await asyncio.to_thread(cli, "rules", "--cancel", ids[0], "../x", *conn)
        assert bad.returncode == 2 and "invalid abort rule id '../x'" in bad.stderr
        assert bad.stdout == ""  # refused before anything was sent
