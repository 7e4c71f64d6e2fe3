"""Abort by labels (``abort_where``): record a rule, then find the running tasks it matches.

The rule is recorded first (durably), the registry read after: a task whose start check ran
before the rule is in the registry by then, and one whose check runs after is refused by the
rule, so no matching task slips between the two (both are atomic scripts, ordered by the
control plane). The running ones found are then aborted by id, as ``abort_many`` does.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from taskiq_abort._aborter.algorithm import requested_by
from taskiq_abort._labels import wanted
from taskiq_abort._wire.protocol import clean_reason
from taskiq_abort.backends.base import AbortBackend
from taskiq_abort.outcome import AbortRule, WorkerInfo


def new_rule(
    labels: Mapping[str, Any],
    declared: Iterable[str],
    task_name: str | None,
    reason: str | None,
) -> AbortRule:
    """The rule asked for, checked (nothing is recorded yet); its reason names it."""
    pairs = wanted(labels, declared)
    if task_name is not None and (not isinstance(task_name, str) or not task_name):
        raise ValueError(f"task_name must be a task's name or None, not {task_name!r}")
    rule_id = uuid.uuid4().hex[:12]
    text = clean_reason(reason)
    stored = f"{text} (abort rule {rule_id})" if text else f"abort rule {rule_id}"
    return AbortRule(rule_id, pairs, task_name, stored, 0.0, 0.0, requested_by())


def rule_ttl(ttl: float | None, backend: AbortBackend) -> float:
    """Seconds the rule lives: ``ttl``, by default the backend's ``request_ttl``."""
    if ttl is None:
        return backend.request_ttl
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < math.inf:
        raise ValueError(f"ttl must be a positive number of seconds, not {ttl!r}")
    return float(ttl)


def matching(workers: Iterable[WorkerInfo], rule: AbortRule) -> list[str]:
    """The ids of the running tasks ``rule`` matches, each once (a task may run on several
    workers: aborting its id reaches every copy)."""
    found = (entry.task_id for info in workers for entry in info.tasks if rule.matches(entry))
    return list(dict.fromkeys(found))
