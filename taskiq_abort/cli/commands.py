"""The CLI's commands: abort ids (with ``--cascade``), bulk abort by name or by ``--label``,
``ls``, ``status``, ``rules``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from taskiq_abort._aborter.calls import abort_reported, where_reported
from taskiq_abort._aborter.where import new_rule, rule_ttl
from taskiq_abort._read.names import resolve_task_name
from taskiq_abort._read.state import soonest_first
from taskiq_abort._wire.protocol import validate_rule_id, validate_task_id
from taskiq_abort.cli import fmt
from taskiq_abort.cli.connect import ENV_URL, CLIError, Connection, Where, connect
from taskiq_abort.cli.labels import describe, has_labels, parse_labels
from taskiq_abort.errors import TaskiqAbortError
from taskiq_abort.observability import events
from taskiq_abort.outcome import AbortOutcome, AbortStatus, WorkerInfo


def out(line: str = "") -> None:
    _write(sys.stdout, line)


def err(line: str) -> None:
    _write(sys.stderr, line)


def _write(stream: TextIO, line: str) -> None:
    try:
        print(line, file=stream, flush=True)
    except BrokenPipeError:
        # The reader left (`taskiq-abort ls | head`): it took what it wanted. The rest goes
        # nowhere, the command carries on, and the exit status stays the command's own.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)


async def run(args: argparse.Namespace) -> int:
    """Connect, run the chosen command, close; returns the exit status."""
    task_ids: list[str] = []
    if args.command == "":
        task_ids = list(dict.fromkeys(args.task_ids))  # once each, in the order given
    elif args.command == "status":
        task_ids = [args.task_id]
    for task_id in task_ids:  # all refused before anything is sent
        validate_task_id(task_id)
    for rule_id in getattr(args, "cancel", ()):
        validate_rule_id(rule_id)
    metrics_file = getattr(args, "metrics", None)
    if metrics_file:
        from taskiq_abort.observability import (
            metrics,  # prometheus-client: only now, and only if asked
        )

        events.subscribe(metrics.enable())
    conn = await connect(
        args.redis_url,
        os.environ.get(ENV_URL),
        args.broker,
        args.prefix,
        topology=Where(args.cluster, args.sentinel, args.master_name),
    )
    try:
        if args.command == "ls":
            labels = parse_labels(args.label)
            return await list_running(conn, args.name, args.worker, args.json, labels)
        if args.command == "status":
            return await show_status(conn, args.task_id, args.json)
        if args.command == "rules":
            return await rules(conn, args.cancel, args.json)
        timeout = conn.timeout if args.timeout is None else args.timeout
        if args.label:
            return await abort_by_labels(conn, args, timeout)
        if args.name is not None:
            return await abort_by_name(conn, args, timeout)
        await conn.backend.get_requests(task_ids)  # fail fast when Redis is unreachable
        outcomes = await abort_ids(
            conn, task_ids, args.reason, not args.no_wait, timeout, args.json, args.grace,
            cascade=args.cascade,
        )  # fmt: skip
        revoked = sum(1 for o in outcomes if o.status is AbortStatus.REVOKED)
        if revoked:
            err(
                fmt.revoked_note(revoked, conn.backend.request_ttl, conn.result_backend is not None)
            )
        return exit_status(outcomes)
    finally:
        await conn.close()
        if metrics_file:
            metrics.write_textfile(metrics_file)


async def abort_ids(
    conn: Connection,
    task_ids: Sequence[str],
    reason: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
    grace: float | None = None,
    from_registry: bool = False,
    cascade: bool = False,
) -> list[AbortOutcome]:
    """Abort the ids in one bulk abort (one Redis call per 1,000 ids, one message per holding
    worker), with their descendants if ``cascade``, and print one line per id; errors are
    raised after."""

    answers = await abort_reported(
        conn.backend,
        conn.result_backend,
        list(task_ids),
        reason=reason,
        wait=wait,
        timeout=timeout,
        grace=grace,
        invalid_in_place=from_registry,  # given ids were checked before connecting
        cascade=cascade,
    )
    return print_answers(answers, as_json, cascade)


def print_answers(
    answers: Sequence[AbortOutcome | TaskiqAbortError], as_json: bool, cascade: bool = False
) -> list[AbortOutcome]:
    """One line per outcome (JSON or text); the first error raised after."""
    outcomes = [a for a in answers if isinstance(a, AbortOutcome)]
    # One error may stand for many ids (a batch Redis refused): say it once.
    failures = list({id(a): a for a in answers if isinstance(a, TaskiqAbortError)}.values())
    if as_json:
        for outcome in outcomes:
            out(fmt.json_line(outcome.to_dict()))
    else:
        for line in fmt.outcome_lines(outcomes):
            out(line)
        for outcome in outcomes if cascade else ():
            out(f"{outcome.task_id}: {outcome.descendants} running descendant(s) stopped")
    if failures:
        if len(failures) > 1:  # main() reports the first; say what else went wrong
            for failure in failures[1:]:
                err(f"error: {' '.join(str(failure).split())}")
        raise failures[0]
    return outcomes


def exit_status(outcomes: Sequence[AbortOutcome]) -> int:
    """0 when every task was aborted or revoked, else 1."""
    return 0 if all(o.ok for o in outcomes) else 1


async def abort_by_name(conn: Connection, args: argparse.Namespace, timeout: float) -> int:
    """Abort every running task called ``args.name``, after a confirmation."""
    workers = await conn.backend.workers()
    running = {e.task_name for w in workers for e in w.tasks}
    name = resolve_task_name(args.name, running)
    if name is None:
        err(f"no running task named {args.name!r} (prefix {conn.prefix!r}); nothing to abort")
        if running:
            err(f"running now: {_names(running)}")
        return 0
    task_ids = list(
        dict.fromkeys(e.task_id for w in workers for e in w.tasks if e.task_name == name)
    )
    holders = len({w.worker_id for w in workers for e in w.tasks if e.task_name == name})
    what = (
        f"{len(task_ids)} running task{'s' if len(task_ids) != 1 else ''} named {name!r} "
        f"on {holders} worker{'s' if holders != 1 else ''}"
    )
    if not await _confirmed(what, args.yes):
        return 1
    outcomes = await abort_ids(
        conn, task_ids, args.reason, not args.no_wait, timeout, args.json, args.grace, True
    )
    # One line per task is printed; the count goes where it cannot spoil --json output.
    stopped = sum(1 for o in outcomes if o.ok)
    (err if args.json else out)(f"aborted {stopped} of {what}")
    return exit_status(outcomes)


async def _running_rows(conn: Connection) -> tuple[list[fmt.Row], list[WorkerInfo]]:
    workers = await conn.backend.workers()
    entries = [(entry, info) for info in workers for entry in info.tasks]
    requests = await conn.backend.get_requests([entry.task_id for entry, _ in entries])
    rows = [fmt.Row(entry, info, requests.get(entry.task_id)) for entry, info in entries]
    return rows, workers


async def list_running(
    conn: Connection,
    name: str | None,
    worker: str | None,
    as_json: bool,
    labels: dict[str, str] | None = None,
) -> int:
    rows, every_worker = await _running_rows(conn)
    now = time.time()
    every_worker.sort(key=lambda w: (w.host, w.started, w.worker_id))  # stable across calls
    workers = [w for w in every_worker if worker is None or w.worker_id.startswith(worker)]
    if name is not None:
        name = resolve_task_name(name, {r.entry.task_name for r in rows}) or name
    wanted = {w.worker_id for w in workers}
    rows = [
        r
        for r in rows
        if r.worker.worker_id in wanted
        and (name is None or r.entry.task_name == name)
        and has_labels(r.entry, labels)
    ]
    if as_json:
        for row in rows:
            out(fmt.json_line(row.to_dict(now)))
        return 0
    if not every_worker:
        out(
            f"no live workers under prefix {conn.prefix!r} on {conn.where} "
            "(do the workers use this Redis and --prefix?)"
        )
        return 0
    if not workers:
        out(
            f"no live worker whose id starts with {worker!r}; "
            f"live: {', '.join(w.worker_id for w in every_worker)}"
        )
        return 0
    lines = fmt.ls_lines(workers, rows, now, show_idle=name is None)
    for line in lines:
        out(line)
    if lines:
        out()
    out(
        f"{len(rows)} running task{'' if len(rows) == 1 else 's'}"
        f"{'' if name is None else f' named {name!r}'}, "
        f"{len(workers)} live worker{'' if len(workers) == 1 else 's'}"
    )
    return 0


def _names(names: set[str], most: int = 10) -> str:
    """Some of ``names``, sorted, for a hint."""
    shown = sorted(names)
    more = f" and {len(shown) - most} more" if len(shown) > most else ""
    return ", ".join(shown[:most]) + more


async def show_status(conn: Connection, task_id: str, as_json: bool) -> int:
    rows, _ = await _running_rows(conn)
    running = next((r for r in rows if r.entry.task_id == task_id), None)
    request = await conn.backend.get_request(task_id)
    has_result: bool | None = None
    if conn.result_backend is not None:
        has_result = bool(await conn.result_backend.is_result_ready(task_id))
    now = time.time()
    status = fmt.status_dict(task_id, running, request, has_result, now)
    if as_json:
        out(fmt.json_line(status))
    else:
        for line in fmt.status_lines(status, now, conn.result_backend is not None):
            out(line)
    return 1 if status["state"] == "unknown" else 0


async def rules(conn: Connection, cancel: Sequence[str], as_json: bool) -> int:
    """List the abort rules in force, soonest to expire first; or cancel the ones named (1 if
    some was not found)."""
    if cancel:
        missing = 0
        for rule_id in dict.fromkeys(cancel):
            removed = await conn.backend.cancel_rule(rule_id)
            missing += not removed
            if as_json:
                out(fmt.json_line({"rule_id": rule_id, "cancelled": removed}))
            else:
                gone = "not found (expired, or cancelled already)"
                out(f"rule {rule_id}: {'cancelled' if removed else gone}")
        return 1 if missing else 0
    found = soonest_first(await conn.backend.rules())
    if as_json:
        for rule in found:
            out(fmt.json_line(rule.to_dict()))
    elif not found:
        out(f"no abort rules in force under prefix {conn.prefix!r} on {conn.where}")
    else:
        for line in fmt.rule_lines(found, time.time()):
            out(line)
    return 0


async def abort_by_labels(conn: Connection, args: argparse.Namespace, timeout: float) -> int:
    """Record an abort rule for ``--label`` (and ``--name``), after a confirmation, and abort
    the running tasks it matches (``abort_where``)."""
    labels = parse_labels(args.label)
    workers = await conn.backend.workers()
    name = None
    if args.name is not None:
        name = resolve_task_name(args.name, {e.task_name for w in workers for e in w.tasks})
        name = name or args.name
    # The workers decide what they index: any label may be asked for here.
    rule = new_rule(labels, labels, name, args.reason)
    ttl = rule_ttl(args.ttl, conn.backend)
    running = sum(1 for w in workers for e in w.tasks if rule.matches(e))
    what = (
        f"{running} running task{'s' if running != 1 else ''} labelled {describe(labels)}"
        f"{'' if name is None else f' named {name!r}'}, and refuse the matching tasks that "
        f"start in the next {ttl:g} s"
    )
    if not await _confirmed(what, args.yes):
        return 1
    found = await where_reported(
        conn.backend,
        conn.result_backend,
        rule,
        ttl,
        wait=not args.no_wait,
        timeout=timeout,
        grace=args.grace,
    )
    outcomes = print_answers(found.answers, args.json)
    stopped = sum(1 for o in outcomes if o.ok)
    expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(found.rule.expires_at))
    (err if args.json else out)(
        f"aborted {stopped} of {len(outcomes)} running; rule {found.rule.rule_id} refuses "
        f"tasks labelled {describe(labels)} until {expires}"
    )
    return exit_status(outcomes)


async def _confirmed(what: str, yes: bool) -> bool:
    """``--yes``, or the user said yes to aborting ``what`` (a terminal is needed to ask)."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise CLIError(f"not aborting {what} without confirmation: pass --yes")
    err(f"Abort {what}? [y/N] ")
    answer = await asyncio.to_thread(sys.stdin.readline)
    if answer.strip().lower() not in ("y", "yes"):
        err("nothing aborted")
        return False
    return True
