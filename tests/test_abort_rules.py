"""Abort rules at the protocol level (``abort_where``'s durable half), on Redis and in-process:
a start that matches a rule is refused at its start check and recorded as a revoked request
naming the rule; a start that matches none, or carries no indexed labels, runs; rules expire
and can be cancelled; and a rule racing starts never lets a matching task through unseen."""

from __future__ import annotations

import asyncio
import time

import pytest
from taskiq import Context, InMemoryBroker, TaskiqDepends
from taskiq.task import AsyncTaskiqTask

from taskiq_abort import (
    AbortConfigError,
    AbortMiddleware,
    AbortRule,
    AbortStatus,
    RunningEntry,
    TaskAbortedError,
    abort,
    abort_rules,
    abort_where,
    cancel_rule,
)
from taskiq_abort._aborter.where import matching
from taskiq_abort.backends.base import AbortBackend
from taskiq_abort.backends.memory import MemoryAbortBackend
from taskiq_abort.backends.redis import RedisAbortBackend
from tests.faultkit import own_server

pytestmark = pytest.mark.anyio


def rule(labels: dict[str, str], name: str | None = None, rid: str = "r1") -> AbortRule:
    return AbortRule(rid, labels, name, f"gone (abort rule {rid})", 0.0, 0.0, "test")


def entry(tid: str, name: str = "job", **labels: str) -> RunningEntry:
    return RunningEntry(tid, name, f"run-{tid}", time.time(), "w1", labels=tuple(labels.items()))


def test_the_entry_carries_its_labels_in_the_token_without_spaces() -> None:
    e = RunningEntry("t", "a job", "r1", 1.5, labels=(("tenant", "a c&m=e;"), ("user", "7")))
    assert " " not in e.token and e.token.startswith("r1;,;")
    back = RunningEntry.decode("t", e.encode())
    assert (back.labels, back.task_name, back.run_id) == (e.labels, "a job", "r1")
    limited = RunningEntry("t", "j", "r2", 1.0, soft_limit=2, time_limit=3, labels=(("k", "v"),))
    back = RunningEntry.decode("t", limited.encode())
    assert (back.soft_limit, back.time_limit, back.labels) == (2, 3, (("k", "v"),))
    assert RunningEntry("t", "j", "r3", 1.0).token == "r3"  # nothing added for everyone else


async def test_a_matching_start_is_refused_and_recorded_as_revoked(backend: AbortBackend) -> None:
    await backend.register("w1", {}, [])
    added = await backend.add_rule(rule({"tenant": "acme"}), 60)
    assert added.expires_at - added.created_at == pytest.approx(60)
    starts = [
        entry("match", tenant="acme", user="1"),
        entry("other", tenant="zeta"),
        entry("plain"),
    ]
    _, refused = await backend.sync("w1", starts, [])
    assert [(n.task_id, n.reason) for n in refused] == [("match", "gone (abort rule r1)")]
    record = await backend.get_request("match")
    assert record is not None and (record.outcome, record.worker) == ("revoked", "w1")
    assert record.reason == "gone (abort rule r1)"
    running = {e.task_id for info in await backend.workers() for e in info.tasks}
    assert running == {"other", "plain"}
    labelled = [e for info in await backend.workers() for e in info.tasks if e.task_id == "other"]
    assert labelled[0].labels == (("tenant", "zeta"),)
    await backend.unregister("w1")


async def test_a_rule_with_a_task_name_matches_that_name_only(backend: AbortBackend) -> None:
    await backend.register("w1", {}, [])
    await backend.add_rule(rule({"tenant": "acme"}, name="report job"), 60)
    starts = [entry("a", "report job", tenant="acme"), entry("b", "other", tenant="acme")]
    _, refused = await backend.sync("w1", starts, [])
    assert [n.task_id for n in refused] == ["a"]
    await backend.unregister("w1")


async def test_rules_expire_and_can_be_cancelled(backend: AbortBackend) -> None:
    await backend.register("w1", {}, [])
    await backend.add_rule(rule({"tenant": "acme"}, rid="short"), 0.2)
    await backend.add_rule(rule({"user": "7"}, rid="long"), 60)
    assert {r.rule_id for r in await backend.rules()} == {"short", "long"}
    while any(r.rule_id == "short" for r in await backend.rules()):
        await asyncio.sleep(0.05)  # until Redis (or the clock) expires it
    _, refused = await backend.sync("w1", [entry("after", tenant="acme")], [])
    assert refused == []
    assert await backend.cancel_rule("long") is True
    assert await backend.cancel_rule("long") is False
    _, refused = await backend.sync("w1", [entry("later", user="7")], [])
    assert refused == [] and await backend.rules() == []
    await backend.unregister("w1")


async def test_many_rules_in_few_calls_each_applied(backend: AbortBackend) -> None:
    """``add_rules`` (a cascade's): 1,001 rules, recorded 500 a call on Redis, each one in
    force with its own labels and the call's time."""
    await backend.register("w1", {}, [])
    wanted = [rule({"user": str(i)}, rid=f"u{i}") for i in range(1001)]
    added = await backend.add_rules(wanted, 60)
    assert [r.rule_id for r in added] == [r.rule_id for r in wanted]
    assert len({r.created_at for r in added[:500]}) == 1  # one call, one time
    assert {r.rule_id for r in await backend.rules()} == {r.rule_id for r in wanted}
    starts = [entry("first", user="0"), entry("last", user="1000"), entry("none", user="x")]
    _, refused = await backend.sync("w1", starts, [])
    assert sorted(n.task_id for n in refused) == ["first", "last"]
    await backend.unregister("w1")


async def test_a_backend_that_implements_add_rule_only_takes_many_rules() -> None:
    """A custom backend may implement ``add_rule`` alone (as before ``add_rules``): a
    cascade's ``add_rules`` records through it, one rule at a time; one with neither says it
    does not support rules."""

    class OneAtATime(MemoryAbortBackend):
        add_rules = AbortBackend.add_rules  # what a backend without add_rules inherits
        calls = 0

        async def add_rule(self, rule: AbortRule, ttl: float) -> AbortRule:
            self.calls += 1
            (added,) = await MemoryAbortBackend.add_rules(self, [rule], ttl)
            return added

    backend = OneAtATime()
    added = await backend.add_rules([rule({"a": "1"}, rid="x"), rule({"b": "2"}, rid="y")], 60)
    assert [r.rule_id for r in added] == ["x", "y"] and backend.calls == 2
    assert {r.rule_id for r in await backend.rules()} == {"x", "y"}

    class Neither(MemoryAbortBackend):
        add_rules = AbortBackend.add_rules
        add_rule = AbortBackend.add_rule

    with pytest.raises(AbortConfigError, match="does not support abort rules"):
        await Neither().add_rules([rule({"a": "1"})], 60)


async def test_add_rules_records_each_rules_requested_by(backend: AbortBackend) -> None:
    """``add_rules`` records each rule's own ``requested_by``, as it returns them."""
    wanted = [
        AbortRule("r1", {"tenant": "a"}, None, "gone (abort rule r1)", 0.0, 0.0, "alice:1"),
        AbortRule("r2", {"tenant": "b"}, None, "gone (abort rule r2)", 0.0, 0.0, "bob:2"),
    ]
    added = await backend.add_rules(wanted, 60)
    stored = {r.rule_id: r.requested_by for r in await backend.rules()}
    assert stored == {r.rule_id: r.requested_by for r in added} == {"r1": "alice:1", "r2": "bob:2"}


async def test_a_start_reads_only_the_rules_on_its_own_labels(prefix: str) -> None:
    """Each rule is indexed under its first label pair: with 1,000 rules in force on other
    tenants, a call of labelled starts reads the one rule that shares a pair with them
    (counted by Redis itself: INFO commandstats counts the commands scripts run), and the
    rules still apply. Before the index a start read every rule in force."""
    with own_server() as server:
        backend = RedisAbortBackend(server.url, prefix=prefix)
        client = server.client()
        try:
            await backend.register("w1", {}, [])
            others = [rule({"tenant": f"t{i}"}, rid=f"o{i}") for i in range(1000)]
            mine = rule({"tenant": "acme", "user": "7"}, rid="mine")
            await backend.add_rules([*others, mine], 60)
            client.config_resetstat()
            starts = [entry("match", tenant="acme", user="7"), entry("miss", tenant="acme")]
            _, refused = await backend.sync("w1", starts, [])
            assert [n.task_id for n in refused] == ["match"]
            assert client.info("commandstats")["cmdstat_hgetall"]["calls"] == 1
            _, refused = await backend.sync("w1", [entry("other", tenant="t7")], [])
            assert [n.task_id for n in refused] == ["other"]  # the index finds the others too
            assert await backend.cancel_rule("o7") is True
            _, refused = await backend.sync("w1", [entry("again", tenant="t7")], [])
            assert refused == []
            assert not client.sismember(f"{{{prefix}}}:rule:ix:tenant=t7", "o7")
        finally:
            client.close()
            await backend.close()


async def test_a_stored_request_comes_before_a_rule(backend: AbortBackend) -> None:
    await backend.register("w1", {}, [])
    await backend.request("t", "by id", "test")
    await backend.add_rule(rule({"tenant": "acme"}), 60)
    _, refused = await backend.sync("w1", [entry("t", tenant="acme")], [])
    assert [(n.task_id, n.reason) for n in refused] == [("t", "by id")]
    await backend.unregister("w1")


class Order:
    """A round whose rule is recorded when the starts reach ``at`` (then they go on)."""

    def __init__(self, at: int) -> None:
        self.at, self.reached, self.recorded = at, asyncio.Event(), asyncio.Event()


async def test_a_rule_racing_starts_misses_no_matching_task(backend: AbortBackend) -> None:
    """Many rounds of starts racing a rule: every matching start is either refused by the rule
    or already in the registry when the aborter reads it after recording the rule (so it is
    aborted by id); never neither. Non-matching starts always run."""
    other: AbortBackend = backend
    if isinstance(backend, RedisAbortBackend):  # the aborter on connections of its own
        other = RedisAbortBackend(backend.topology.url, prefix=backend.prefix)
    await backend.register("w1", {}, [])

    async def worker(starts: list[RunningEntry], order: Order | None) -> set[str]:
        refused: set[str] = set()
        for i, one in enumerate(starts):  # one start check each, interleaving with the aborter
            if order is not None and i == order.at:
                order.reached.set()
                await order.recorded.wait()
            _, notices = await backend.sync("w1", [one], [])
            refused |= {n.task_id for n in notices}
            await asyncio.sleep(0)
        if order is not None:
            order.reached.set()  # at == len(starts): the rule comes after every start
        return refused

    async def aborter(wanted: AbortRule, turns: int, order: Order | None) -> set[str]:
        if order is not None:
            await order.reached.wait()
        for _ in range(turns):  # lands the rule before, among or after the starts
            await asyncio.sleep(0)
        added = await other.add_rule(wanted, 60)
        if order is not None:
            order.recorded.set()
        return set(matching(await other.workers(), added))

    splits: set[tuple[int, int]] = set()  # how each round fell: the race must really vary
    try:
        for round_ in range(150):
            tenant = f"acme{round_}"
            starts = [entry(f"{round_}-{i}", tenant=tenant if i % 2 else "zeta") for i in range(6)]
            wanted = rule({"tenant": tenant}, rid=f"r{round_}")
            # Every third round records the rule at a start of its choosing (before, among or
            # after the starts, whatever the machine's timing); the others race it freely.
            order = Order((round_ // 3) % 7) if round_ % 3 == 0 else None
            refused, found = await asyncio.gather(
                worker(starts, order), aborter(wanted, 0 if order else round_ % 9, order)
            )
            matched = {s.task_id for s in starts if s.label_map["tenant"] == tenant}
            assert refused | found == matched, f"round {round_}"
            assert not refused & found, f"round {round_}"
            splits.add((len(refused), len(found)))
            await backend.sync("w1", [], [s for s in starts if s.task_id not in refused])
        assert len(splits) > 2, splits
    finally:
        await backend.unregister("w1")
        if other is not backend:
            await other.close()


async def test_abort_where_on_an_in_memory_broker() -> None:
    broker = InMemoryBroker().with_middlewares(AbortMiddleware(index_labels=("tenant",)))
    started = asyncio.Event()

    @broker.task(task_name="hold")
    async def hold() -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    @broker.task(task_name="quick")
    async def quick() -> str:
        return "ran"

    await broker.startup()
    try:
        with pytest.raises(AbortConfigError, match=r"'user' is not indexed.*index_labels"):
            await abort_where(broker, {"user": "7"})
        with pytest.raises(ValueError, match="at least one pair"):
            await abort_where(broker, {})
        assert await abort_rules(broker) == []  # nothing recorded by a refused call
        running = await hold.kicker().with_labels(tenant="acme").kiq()
        await started.wait()
        summary = await abort_where(broker, {"tenant": "acme"}, reason="account deleted")
        assert [o.task_id for o in summary.aborted] == [running.task_id]
        assert summary.rule.reason == f"account deleted (abort rule {summary.rule.rule_id})"
        result = await running.wait_result(timeout=5)
        assert isinstance(result.error, TaskAbortedError)
        later = await quick.kicker().with_labels(tenant="acme").kiq()
        result = await later.wait_result(timeout=5)
        assert isinstance(result.error, TaskAbortedError)
        assert result.error.reason == summary.rule.reason
        elsewhere = await quick.kicker().with_labels(tenant="zeta").kiq()
        assert (await elsewhere.wait_result(timeout=5)).return_value == "ran"
        assert await cancel_rule(broker, summary) is True
        with pytest.raises(ValueError, match="invalid abort rule id"):
            await cancel_rule(broker, "no such rule")  # a typo, not a quiet False
        again = await quick.kicker().with_labels(tenant="acme").kiq()
        assert (await again.wait_result(timeout=5)).return_value == "ran"
    finally:
        await broker.shutdown()


async def test_cascade_in_process_from_a_middle_node_stops_its_subtree_only() -> None:
    """Cascading from a task that is not a tree's root: its own descendants carry another root,
    so each running child gets a ``parent`` rule of its own; its siblings' subtrees run on."""
    broker = InMemoryBroker().with_middlewares(AbortMiddleware())
    kicked: dict[str, list[str]] = {}
    ready = asyncio.Event()

    @broker.task(task_name="node")
    async def node(depth: int, context: Context = TaskiqDepends()) -> str:
        mine = kicked.setdefault(context.message.task_id, [])
        for _ in range(3 if depth < 2 else 0):
            mine.append((await node.kiq(depth + 1)).task_id)
        if sum(map(len, kicked.values())) == 12 and len(kicked) == 13:
            ready.set()
        await asyncio.sleep(60)
        return "end"

    await broker.startup()
    try:
        root = await node.kiq(0)
        await ready.wait()
        middle, *others = kicked[root.task_id]
        outcome = await abort(broker, middle, cascade=True, reason="that branch")
        assert (outcome.status, outcome.descendants) == (AbortStatus.ABORTED, 3)
        results = broker.result_backend
        for stopped in (middle, *kicked[middle]):
            result = await AsyncTaskiqTask(stopped, results).wait_result(timeout=5)
            assert isinstance(result.error, TaskAbortedError)
        untouched = [*others, *kicked[others[0]], *kicked[others[1]]]
        assert not any([await results.is_result_ready(t) for t in untouched])
        # Off by default: the root alone.
        assert (await abort(broker, root)).descendants == 0
        assert not any([await results.is_result_ready(t) for t in untouched])
        assert (await abort(broker, others[0], cascade=True)).descendants == 3
    finally:
        await broker.shutdown()


async def test_a_rule_recorded_while_a_worker_was_away_applies_when_it_registers_again(
    backend: AbortBackend,
) -> None:
    """The aborter could not see the worker's task (its lease had lapsed): when the worker
    re-registers what it runs, the rule gives the matching task a pending request, which the
    worker applies as it applies requests made while it was away."""
    held = [entry("match", tenant="acme"), entry("other", tenant="zeta"), entry("plain")]
    await backend.add_rule(rule({"tenant": "acme"}, rid="away"), 60)
    notices = await backend.register("w1", {"host": "h"}, held)
    assert [(n.task_id, n.reason) for n in notices] == [("match", "gone (abort rule away)")]
    record = await backend.get_request("match")
    assert record is not None and record.outcome is None  # pending: the worker aborts it
    await backend.unregister("w1")


async def test_a_child_kicked_while_the_aborted_parent_cleans_up_never_runs() -> None:
    broker = InMemoryBroker().with_middlewares(AbortMiddleware())
    ran: list[str] = []
    kicked: list[AsyncTaskiqTask[str]] = []
    parent_running = asyncio.Event()

    @broker.task(task_name="child")
    async def child() -> str:
        ran.append("child")
        return "ran"

    @broker.task(task_name="parent")
    async def parent() -> str:
        try:
            parent_running.set()
            await asyncio.sleep(60)
        finally:  # clean-up that fans out once more (edge mode lets it await)
            kicked.append(await child.kiq())
        return "never"

    await broker.startup()
    try:
        task = await parent.kiq()
        await parent_running.wait()
        assert (await abort(broker, task, cascade=True)).status is AbortStatus.ABORTED
        (late,) = kicked
        result = await late.wait_result(timeout=5)
        assert isinstance(result.error, TaskAbortedError) and ran == []
    finally:
        await broker.shutdown()


async def test_expired_rule_ids_leave_the_rules_set_while_rules_keep_coming(prefix: str) -> None:
    """``{P}:rules`` holds the rules in force: an expired rule's id leaves it (and its index)
    when the next rule is recorded, even when no start ever carries that rule's pairs again (a
    cascade's ``abort_parent=<aborted id>``). With rules recorded more often than their ``ttl``
    the key never expires as a whole: without that, dead ids would pile up without bound (and
    ``RULE_LIST`` read every one of them in one script). Found in review."""
    with own_server() as server:
        backend = RedisAbortBackend(server.url, prefix=prefix)
        client = server.client()
        try:
            await backend.register("w1", {}, [])
            n = 0
            for wave in range(3):  # cascades, one after another, each rule short-lived
                await backend.add_rules(
                    [rule({"abort_parent": f"p{wave}-{i}"}, rid=f"c{wave}x{i}") for i in range(50)],
                    0.2,
                )
                await asyncio.sleep(0.4)  # the wave's rules expired
                await backend.add_rules([rule({"tenant": f"live{wave}"}, rid=f"l{wave}")], 60)
                for _ in range(3):  # labelled starts run, on other labels
                    n += 1
                    _, refused = await backend.sync("w1", [entry(f"s{n}", tenant="acme")], [])
                    assert refused == []
            live = {f"l{wave}" for wave in range(3)}
            assert set(client.zrange(f"{{{prefix}}}:rules", 0, -1)) == live
            index = f"{{{prefix}}}:rule:ix:abort_parent=p2-0"
            assert not client.exists(index)  # an index lives as long as its longest rule
        finally:
            client.close()
            await backend.close()
