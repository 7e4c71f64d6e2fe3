"""Security (issue 4): the minimal ACL rules of docs/acl.md work, missing rights give a clear
``AbortPermissionError`` fast, passwords never reach logs or error messages.

Each test starts its own redis-server, so ACL users never leak into the session server.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from taskiq_abort import (
    AbortBackendUnavailableError,
    AbortMiddleware,
    AbortPermissionError,
    AbortStatus,
    TaskAbortedError,
    abort,
    abort_many,
    find_middleware,
)
from taskiq_abort._wire.keys import KeySpace
from taskiq_abort.backends.redis import RedisAbortBackend
from taskiq_abort.outcome import AbortRule, RunningEntry
from tests.conftest import Events
from tests.faultkit import apoll, client_broker, held, own_server, spawn, wait_log, worker_log

pytestmark = pytest.mark.anyio

PASSWORD = "s3cr3t-Pa55-do-not-log"

# Exactly the rules of docs/acl.md, with the prefix filled in (keep the two in step).
WORKER_RULES = (
    "on >{pw} resetkeys resetchannels ~{{{p}}}:* &{{{p}}}:ctl:* -@all "
    "+hello +auth +ping +evalsha +eval +script|load "
    "+exists +hget +hmget +hgetall +hkeys +hset +hsetnx +hdel +del +pexpire +pttl +time +set "
    "+zadd +zrem +zscore +zrangebyscore +publish +subscribe +unsubscribe"
)
ABORTER_RULES = (
    "on >{pw} resetkeys resetchannels ~{{{p}}}:req:* ~{{{p}}}:eta:* ~{{{p}}}:workers "
    "~{{{p}}}:holders ~{{{p}}}:rules ~{{{p}}}:rule:* %R~{{{p}}}:worker:* %R~{{{p}}}:tasks:* "
    "&{{{p}}}:ctl:* -@all +hello +auth +ping +evalsha +eval +script|load "
    "+exists +hget +hgetall +hset +hsetnx +hdel +del +pexpire +pttl +set +time "
    "+zadd +zrem +zremrangebyscore +zscore +zrangebyscore +publish +subscribe +unsubscribe"
)


def _setuser(server, name: str, rules: str, prefix: str) -> str:
    client = server.client()
    try:
        client.execute_command("ACL", "SETUSER", name, *rules.format(pw=PASSWORD, p=prefix).split())
    finally:
        client.close()
    return f"redis://{name}:{PASSWORD}@127.0.0.1:{server.port}/0"


async def test_minimal_acl_worker_and_aborter(redis_url, prefix, events: Events) -> None:
    """A worker and an aborter holding only the documented rights abort a running task."""
    with own_server() as plane:
        worker_url = _setuser(plane, "abort-worker", WORKER_RULES, prefix)
        aborter_url = _setuser(plane, "abort-client", ABORTER_RULES, prefix)
        env = {"TASKIQ_ABORT_TEST_ABORT_URL": worker_url}
        with spawn(redis_url, prefix, ready=False, env=env) as worker:
            async with client_broker(redis_url, prefix, abort_url=aborter_url) as client:
                task = await client.find_task("sleeper").kiq(60)
                events.wait(task.task_id, "started")
                await apoll(lambda: _holds(client, task.task_id), 30, "the task registered")
                outcome = await task.abort(reason="acl", timeout=10)
                assert outcome.status is AbortStatus.ABORTED
                events.wait(task.task_id, "finally")
                result = await task.wait_result(timeout=10)
                assert isinstance(result.error, TaskAbortedError)
                # A bulk abort: REQUEST_MANY (and CONFIRM_MANY when confirmations pile up).
                more = [await client.find_task("sleeper").kiq(60) for _ in range(3)]
                for other in more:
                    events.wait(other.task_id, "started")
                    await apoll(lambda t=other: _holds(client, t.task_id), 30, "registered")
                outcomes = await abort_many(client, more, reason="acl", timeout=10)
                assert {o.status for o in outcomes} == {AbortStatus.ABORTED}
                # A kick delayed beyond request_ttl notes its ETA: the rights cover it.
                delay = find_middleware(client).backend.request_ttl + 60
                delayed = await client.find_task("quick").kicker().with_labels(delay=delay).kiq(1)
                with plane.client() as admin:
                    assert admin.exists(KeySpace(prefix).eta(delayed.task_id))
                queued = await client.find_task("quick").kicker().with_task_id("q-acl").kiq(1)
                # Whatever stage it is in (queued, running, done), the rights suffice.
                assert (await abort_id(client, queued.task_id)).status in (
                    AbortStatus.REVOKED,
                    AbortStatus.ABORTED,
                    AbortStatus.FINISHED,
                )
            log = worker_log(worker)
            assert "NOPERM" not in log and "refused" not in log, log[-3000:]
            assert PASSWORD not in log


async def abort_id(client, task_id: str):
    return await abort(client, task_id, timeout=5)


async def _holds(client, task_id: str) -> bool:
    return task_id in await held(client)


async def _not_held(client, task_id: str) -> bool:
    return task_id not in await held(client)


async def test_minimal_acl_aborter_can_abort_a_task_that_already_finished(
    redis_url: str, prefix: str
) -> None:
    """docs/acl.md's aborter rights cover every script an aborter runs: aborting a task whose
    result is stored and that no worker holds runs SETTLE (it answers ``finished``)."""
    with own_server() as plane:
        worker_url = _setuser(plane, "abort-worker", WORKER_RULES, prefix)
        aborter_url = _setuser(plane, "abort-client", ABORTER_RULES, prefix)
        env = {"TASKIQ_ABORT_TEST_ABORT_URL": worker_url}
        with spawn(redis_url, prefix, ready=False, env=env):
            async with client_broker(redis_url, prefix, abort_url=aborter_url) as client:
                task = await client.find_task("quick").kiq(1)
                assert (await task.wait_result(timeout=30)).return_value == 2
                await apoll(  # its worker no longer lists it: nobody holds it
                    lambda: _not_held(client, task.task_id), 30, "the finish synced"
                )
                outcome = await abort(client, task.task_id, timeout=5)
                assert outcome.status is AbortStatus.FINISHED


async def test_minimal_acl_records_lists_cancels_and_applies_rules(prefix) -> None:
    """The documented rights cover abort rules: an aborter records, lists and cancels them
    (RULE_ADD, RULE_LIST, RULE_CANCEL), a worker's start check and re-registration apply them
    and drop expired ones (SYNC, REGISTER)."""
    with own_server() as plane:
        worker = RedisAbortBackend(_setuser(plane, "w", WORKER_RULES, prefix), prefix=prefix)
        aborter = RedisAbortBackend(_setuser(plane, "a", ABORTER_RULES, prefix), prefix=prefix)
        try:
            await worker.register("w1", {}, [])
            running = RunningEntry("held", "job", "r0", time.time(), labels=(("tenant", "acme"),))
            await worker.sync("w1", [running], [])
            short, kept = (
                AbortRule(rid, {"tenant": "acme"}, None, f"gone ({rid})", 0.0, 0.0, "t")
                for rid in ("short", "kept")
            )
            await aborter.add_rules([short], 0.05)
            await aborter.add_rule(kept, 60)

            async def short_expired() -> bool:
                return {r.rule_id for r in await aborter.rules()} == {"kept"}

            await apoll(short_expired, 30, "the short rule's expiry")  # SYNC then drops its id
            start = RunningEntry("new", "job", "r1", time.time(), labels=(("tenant", "acme"),))
            _, refused = await worker.sync("w1", [start], [])
            assert [n.task_id for n in refused] == ["new"]
            pending = await worker.register("w1", {}, [running])  # and to what it runs
            assert [n.task_id for n in pending] == ["held"]
            assert await aborter.cancel_rule("kept") is True
        finally:
            await worker.close()
            await aborter.close()


async def test_aborter_without_rights_gets_clear_error_fast(redis_url, prefix) -> None:
    with own_server() as plane:
        # A user of another app: all commands, but only that app's keys and channels.
        url = _setuser(plane, "other-app", "on >{pw} ~otherapp:* &otherapp:* +@all", prefix)
        async with client_broker(redis_url, prefix, abort_url=url) as client:
            task = await client.find_task("quick").kiq(1)
            started = time.monotonic()
            with pytest.raises(AbortPermissionError) as info:
                await task.abort(timeout=5)
            assert time.monotonic() - started < 10  # not a hang, not a retry loop
            message = str(info.value)
            assert f"{{{prefix}}}:" in message  # says which keys to grant
            assert PASSWORD not in message and PASSWORD not in repr(info.value)


async def test_a_command_a_script_may_not_run_is_a_permission_error(redis_url, prefix) -> None:
    """The keys granted but a command a script runs is not (Redis answers "ERR The user
    executing the script can't run this command", without NOPERM): AbortPermissionError that
    points at docs/acl.md, not a generic backend error."""
    with own_server() as plane:
        url = _setuser(plane, "no-hgetall", ABORTER_RULES.replace(" +hgetall", ""), prefix)
        async with client_broker(redis_url, prefix, abort_url=url) as client:
            task = await client.find_task("quick").kiq(1)
            with pytest.raises(AbortPermissionError, match=r"docs/acl\.md"):
                await task.abort(timeout=5)


async def test_worker_without_rights_keeps_running_and_says_why(redis_url, prefix) -> None:
    with own_server() as plane:
        url = _setuser(plane, "other-app", "on >{pw} ~otherapp:* &otherapp:* +@all", prefix)
        env = {"TASKIQ_ABORT_TEST_ABORT_URL": url}
        with spawn(redis_url, prefix, ready=False, env=env) as worker:
            async with client_broker(redis_url, prefix) as client:
                task = await client.find_task("quick").kiq(3)  # fail open: it still runs
                assert (await task.wait_result(timeout=30)).return_value == 6
            log = wait_log(worker, "abort registry unavailable")
            assert "refused" in log or "NOPERM" in log, log[-3000:]
            assert PASSWORD not in log


async def test_password_never_logged_during_outages(redis_url, prefix) -> None:
    """Worker logs of lost connections and failed registry calls mask the password."""
    with own_server() as plane:
        url = _setuser(plane, "app", "on >{pw} ~* &* +@all", prefix)
        env = {"TASKIQ_ABORT_TEST_ABORT_URL": url}
        with spawn(redis_url, prefix, ready=False, env=env) as worker:
            async with client_broker(redis_url, prefix, abort_url=url) as client:
                await apoll(lambda: _any_worker(client), 30, "the worker to register")
                plane.stop()
                task = await client.find_task("quick").kiq(2)
                assert (await task.wait_result(timeout=30)).return_value == 4
                log = wait_log(worker, "[taskiq_abort][WARNING]")  # one line per outage
                assert PASSWORD not in log
                assert "***" in log
                with pytest.raises(AbortBackendUnavailableError) as info:
                    await task.abort(timeout=2)
                assert PASSWORD not in str(info.value) and PASSWORD not in repr(info.value)
                cause = info.value.__cause__
                assert cause is None or PASSWORD not in str(cause)


async def _any_worker(client) -> bool:
    from taskiq_abort import find_middleware

    return bool(await find_middleware(client).backend.workers())


async def _command_pool(mw: AbortMiddleware):  # type: ignore[no-untyped-def]
    return mw.backend._c.cmd.connection_pool  # type: ignore[attr-defined]  # built per loop


def test_tls_url_and_password_pass_through_to_redis_py() -> None:
    mw = AbortMiddleware(f"rediss://user:{PASSWORD}@db.example:6380/0", prefix="app")
    assert PASSWORD not in repr(mw) and "***" in repr(mw)
    pool = asyncio.run(_command_pool(mw))
    assert pool.connection_class.__name__ == "SSLConnection"  # rediss:// speaks TLS
    assert pool.connection_kwargs["password"] == PASSWORD
    assert pool.connection_kwargs["username"] == "user"
