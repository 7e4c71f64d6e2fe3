"""``abort(..., cascade=True)``: abort tasks and every task they fanned out.

A task kicked from inside a running task carries its parent's id and its tree's root id as
labels (``_labels.PARENT``, ``_labels.ROOT``, always indexed). A cascade records abort rules
first, so that the start check refuses every descendant that starts later (queued now, or kicked
by a body while it cleans up): one on ``root = id`` (all descendants of a tree's first task) and
one on ``parent = id``. Then it reads the registry for the running descendants, and aborts them
with the tasks asked for, by id. A running descendant of a task that is not a root (its own
descendants carry another root) gets a ``parent`` rule of its own, and the registry is read
again until no new one turns up: a child started before its parent's rule was recorded is then
found running.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace

from taskiq_abort._aborter.algorithm import requested_by
from taskiq_abort._labels import PARENT, ROOT
from taskiq_abort._wire.protocol import clean_reason, validate_task_id
from taskiq_abort.backends.base import AbortBackend
from taskiq_abort.errors import TaskiqAbortError
from taskiq_abort.outcome import AbortOutcome, AbortRule, RunningEntry

AbortIds = Callable[[list[str]], Awaitable[list[AbortOutcome | TaskiqAbortError]]]


def _rule(label: str, task_id: str, reason: str | None, by: str) -> AbortRule:
    rule_id = uuid.uuid4().hex[:12]
    text = f"{reason} " if reason else ""
    stored = f"{text}(cascade from task {task_id}, abort rule {rule_id})"
    return AbortRule(rule_id, {label: task_id}, None, stored, 0.0, 0.0, by)


def _descend(
    entries: Iterable[RunningEntry], asked: set[str], owner: dict[str, str]
) -> list[RunningEntry]:
    """Add to ``owner`` (descendant id -> the asked id it descends from) the running
    descendants in ``entries``; returns the new ones."""
    pending = [e for e in entries if e.task_id not in asked and e.task_id not in owner]
    found: list[RunningEntry] = []
    while True:
        more = []
        for entry in pending:
            labels = entry.label_map
            root, parent = labels.get(ROOT, ""), labels.get(PARENT, "")
            src = root if root in asked else parent if parent in asked else owner.get(parent)
            if src is None:
                more.append(entry)
            else:
                owner[entry.task_id] = src
                found.append(entry)
        if len(more) == len(pending):
            return found
        pending = more


async def abort_cascade(
    backend: AbortBackend, task_ids: list[str], reason: str | None, abort_ids: AbortIds
) -> list[AbortOutcome | TaskiqAbortError]:
    """Abort ``task_ids`` and their descendants; one answer per id of ``task_ids``, each
    outcome saying how many running descendants were stopped (``descendants``)."""
    asked = set(map(validate_task_id, task_ids))
    text, by, ttl = clean_reason(reason), requested_by(), backend.request_ttl
    # First: from now on no descendant starts.
    await backend.add_rules([_rule(lb, t, text, by) for t in asked for lb in (ROOT, PARENT)], ttl)
    owner: dict[str, str] = {}
    while True:
        entries = [entry for info in await backend.workers() for entry in info.tasks]
        # A descendant of a root has the root's label: its children are refused already.
        inner = [e for e in _descend(entries, asked, owner) if e.label_map.get(ROOT) not in asked]
        if not inner:
            break
        await backend.add_rules([_rule(PARENT, e.task_id, text, by) for e in inner], ttl)
    answers = await abort_ids([*task_ids, *owner])
    stopped: dict[str, int] = {}
    for descendant, answer in zip(owner, answers[len(task_ids) :], strict=True):
        if isinstance(answer, AbortOutcome) and answer.ok:
            stopped[owner[descendant]] = stopped.get(owner[descendant], 0) + 1
    return [
        replace(answer, descendants=stopped.get(answer.task_id, 0))
        if isinstance(answer, AbortOutcome)
        else answer
        for answer in answers[: len(task_ids)]
    ]
