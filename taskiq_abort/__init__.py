"""taskiq-abort: abort TaskIQ tasks, queued or running, on any worker process.

Quick start::

    broker = (RedisStreamBroker(url)
              .with_result_backend(RedisAsyncResultBackend(url))
              .with_middlewares(AbortMiddleware(url)))

    task = await crunch.kiq(42)
    outcome = await task.abort(reason="user pressed stop")   # AbortStatus.ABORTED, ...
    outcomes = await abort_many(broker, task_ids)             # many at once, one per id

The public names are imported on first use (PEP 562), so ``import taskiq_abort.cli`` or
``taskiq_abort.errors`` does not import taskiq: the admin CLI answers in a fraction of a second.
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
    TaskInterrupted,
    TaskiqAbortError,
)

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on demand
    from taskiq_abort.api import abort, abort_many, find_middleware
    from taskiq_abort.backends import AbortBackend, MemoryAbortBackend, RedisAbortBackend
    from taskiq_abort.handle import AbortableDecoratedTask, AbortableTask, abortable_task
    from taskiq_abort.middleware import AbortMiddleware
    from taskiq_abort.observability import AbortObservability
    from taskiq_abort.outcome import AbortOutcome, AbortStatus
    from taskiq_abort.token import AbortToken, shield

__version__ = "0.2.0"

_WHERE = {
    "abort": "taskiq_abort.api",
    "abort_many": "taskiq_abort.api",
    "find_middleware": "taskiq_abort.api",
    "AbortBackend": "taskiq_abort.backends",
    "MemoryAbortBackend": "taskiq_abort.backends",
    "RedisAbortBackend": "taskiq_abort.backends",
    "AbortableDecoratedTask": "taskiq_abort.handle",
    "AbortableTask": "taskiq_abort.handle",
    "abortable_task": "taskiq_abort.handle",
    "AbortMiddleware": "taskiq_abort.middleware",
    "AbortObservability": "taskiq_abort.observability",
    "AbortOutcome": "taskiq_abort.outcome",
    "AbortStatus": "taskiq_abort.outcome",
    "AbortToken": "taskiq_abort.token",
    "shield": "taskiq_abort.token",
}

__all__ = [
    "AbortBackend",
    "AbortBackendError",
    "AbortBackendUnavailableError",
    "AbortConfigError",
    "AbortMiddleware",
    "AbortObservability",
    "AbortOutcome",
    "AbortPermissionError",
    "AbortStatus",
    "AbortToken",
    "AbortableDecoratedTask",
    "AbortableTask",
    "InvalidTaskIdError",
    "MemoryAbortBackend",
    "RedisAbortBackend",
    "TaskAbortedError",
    "TaskInterrupted",
    "TaskiqAbortError",
    "__version__",
    "abort",
    "abort_many",
    "abortable_task",
    "find_middleware",
    "shield",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use, then keep it here."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'taskiq_abort' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
