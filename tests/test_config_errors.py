"""Mistakes a newcomer makes are named: misspelt options, a zero lease, a Redis database that
does not exist; and the worker's log says what happened once, truthfully."""

from __future__ import annotations

import difflib
import logging
import re

import pytest
import redis.asyncio

from taskiq_abort import AbortMiddleware
from taskiq_abort.errors import AbortConfigError
from taskiq_abort.middleware import TYPO_CUTOFF, own_options
from taskiq_abort.observability.events import RUNNING, applied_line
from taskiq_abort.observability.outages import Link, OutageLog
from tests.faultkit import spawn, wait_log, worker_log
from tests.support.redis_servers import free_port
from tests.test_cli import cli, one_error_line


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", None])
@pytest.mark.parametrize(
    ("typo", "meant"),
    [("interupt_threads", "interrupt_threads"), ("abort_timout", "abort_timeout"),
     ("fail_close", "fail_closed"), ("request_tll", "request_ttl")],
)  # fmt: skip
def test_a_misspelt_option_says_did_you_mean(url: str | None, typo: str, meant: str) -> None:
    with pytest.raises(AbortConfigError) as info:
        AbortMiddleware(url, **{typo: True})
    assert str(info.value) == (
        f"AbortMiddleware got an unknown option {typo!r} (did you mean {meant!r}?)"
    )


def test_no_redis_option_is_taken_for_a_typo_of_ours() -> None:
    """A redis-py keyword close to one of ours would be refused as a typo: there is none."""
    redis_options = {
        *redis.asyncio.Redis.__init__.__code__.co_varnames,
        *redis.asyncio.RedisCluster.__init__.__code__.co_varnames,
    }
    ours = own_options()
    assert {"lease", "interrupt_threads", "redis_timeout"} <= set(ours)
    close = {
        name: difflib.get_close_matches(name, ours, n=1, cutoff=TYPO_CUTOFF)
        for name in redis_options - set(ours)
    }
    assert {name: match for name, match in close.items() if match} == {}
    AbortMiddleware("redis://127.0.0.1:1/0", socket_timeout=None)  # passed through


@pytest.mark.parametrize("option", ["lease", "request_ttl", "redis_timeout"])
@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", None])
def test_a_non_positive_duration_names_its_option(option: str, url: str | None) -> None:
    with pytest.raises(ValueError, match=rf"^AbortMiddleware\({option}=0\): must be a positive"):
        AbortMiddleware(url, **{option: 0})


def test_a_database_out_of_range_says_so(redis_url: str) -> None:
    url = f"{redis_url.rsplit('/', 1)[0]}/99"
    proc = cli("--redis-url", url, "ls")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "has no such database" in line and "`databases` setting" in line
    assert "replica" not in line and "proxy" not in line


def test_a_log_line_never_says_reason_none() -> None:
    line = applied_line("t1", "crunch", RUNNING, None)
    assert "None" not in line and "no reason given" in line
    assert "reason: why" in applied_line("t1", "crunch", RUNNING, "why")


def test_an_outage_is_logged_once_each_way(caplog: pytest.LogCaptureFixture) -> None:
    log, logger = OutageLog(), logging.getLogger("taskiq_abort.test")
    registry, channel = Link(), Link()
    caplog.set_level(logging.DEBUG, logger="taskiq_abort.test")
    log.lost(channel, logger, "lost channel")
    log.lost(channel, logger, "lost channel")  # a reconnect that failed again: nothing new
    log.lost(registry, logger, "registry unavailable")
    log.back(channel, logger, "channel back")
    log.back(registry, logger, "registry rewritten")
    log.back(registry, logger, "registry rewritten")  # not lost again: nothing
    seen = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert seen[:3] == [
        ("WARNING", "lost channel"),
        ("DEBUG", "registry unavailable"),
        ("DEBUG", "taskiq-abort: channel back"),
    ]
    assert seen[3][0] == "INFO"
    assert re.fullmatch(
        r"taskiq-abort: Redis reachable again after \d+\.\d s \(registry rewritten\)", seen[3][1]
    )
    assert len(seen) == 4


def test_a_worker_that_never_had_the_channel_does_not_say_it_lost_it(redis_url, prefix) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # the abort plane is not up yet
    with spawn(redis_url, prefix, ready=False, env={"TASKIQ_ABORT_TEST_ABORT_URL": nowhere}) as w:
        wait_log(w, "could not open the control channel")
        assert "lost the control channel" not in worker_log(w)
