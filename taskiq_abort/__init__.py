"""taskiq-abort: abort TaskIQ tasks, queued or running, on any worker process.

Quick start::

    broker = (RedisStreamBroker(url)
              .with_result_backend(RedisAsyncResultBackend(url))
              .with_middlewares(AbortMiddleware(url)))

    task = await crunch.kiq(42)
    outcome = await task.abort(reason="user pressed stop")   # AbortStatus.ABORTED, ...
    outcomes = await abort_many(broker, task_ids)             # many at once, one per id

``__all__`` is the export list. The errors are imported at once; the other names on first use
(PEP 562), from the module ``_LAZY`` names, so that ``import taskiq_abort.cli`` or
``taskiq_abort.errors`` does not import taskiq: the admin CLI answers in a fraction of a second.
The ``TYPE_CHECKING`` block says the same to type checkers; tests/test_exported_members.py
checks that the three agree.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The errors, eagerly (a small module that imports nothing): taskiq rebuilds a stored
# TaskAbortedError only from a module already in sys.modules, so `import taskiq_abort` must be
# enough for a process that reads results.
from taskiq_abort.errors import (
    AbortBackendError,
    AbortBackendUnavailableError,
    AbortConfigError,
    AbortPermissionError,
    InvalidTaskIdError,
    TaskAbortedError,
    TaskExpired,
    TaskInterrupted,
    TaskiqAbortError,
    TaskTimeLimitExceeded,
)

if TYPE_CHECKING:
    from taskiq_abort.api import (
        abort,
        abort_many,
        abort_rules,
        abort_where,
        cancel_rule,
        find_middleware,
    )
    from taskiq_abort.backends import AbortBackend, MemoryAbortBackend, RedisAbortBackend
    from taskiq_abort.handle import AbortableTask, abortable_task
    from taskiq_abort.middleware import AbortMiddleware
    from taskiq_abort.observability.middleware import AbortObservability
    from taskiq_abort.outcome import (
        AbortOutcome,
        AbortRule,
        AbortStatus,
        RunningEntry,
        WhereOutcome,
        WorkerInfo,
    )
    from taskiq_abort.token import AbortToken, shield

__version__ = "0.2.0"

__all__ = [
    "AbortBackend",
    "AbortBackendError",
    "AbortBackendUnavailableError",
    "AbortConfigError",
    "AbortMiddleware",
    "AbortObservability",
    "AbortOutcome",
    "AbortPermissionError",
    "AbortRule",
    "AbortStatus",
    "AbortToken",
    "AbortableTask",
    "InvalidTaskIdError",
    "MemoryAbortBackend",
    "RedisAbortBackend",
    "RunningEntry",
    "TaskAbortedError",
    "TaskExpired",
    "TaskInterrupted",
    "TaskTimeLimitExceeded",
    "TaskiqAbortError",
    "WhereOutcome",
    "WorkerInfo",
    "__version__",
    "abort",
    "abort_many",
    "abort_rules",
    "abort_where",
    "abortable_task",
    "cancel_rule",
    "find_middleware",
    "shield",
]

_LAZY = {
    "taskiq_abort.api": (
        "abort",
        "abort_many",
        "abort_rules",
        "abort_where",
        "cancel_rule",
        "find_middleware",
    ),
    "taskiq_abort.backends": ("AbortBackend", "MemoryAbortBackend", "RedisAbortBackend"),
    "taskiq_abort.handle": ("AbortableTask", "abortable_task"),
    "taskiq_abort.middleware": ("AbortMiddleware",),
    "taskiq_abort.observability.middleware": ("AbortObservability",),
    "taskiq_abort.outcome": (
        "AbortOutcome",
        "AbortRule",
        "AbortStatus",
        "RunningEntry",
        "WhereOutcome",
        "WorkerInfo",
    ),
    "taskiq_abort.token": ("AbortToken", "shield"),
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use, then keep it here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'taskiq_abort' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
