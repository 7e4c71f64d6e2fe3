"""taskiq-abort: abort TaskIQ tasks, queued or running, on any worker process.

Quick start::

    broker = (RedisStreamBroker(url)
              .with_result_backend(RedisAsyncResultBackend(url))
              .with_middlewares(AbortMiddleware(url)))

    task = await crunch.kiq(42)
    outcome = await task.abort(reason="user pressed stop")   # AbortStatus.ABORTED, ...
"""

from taskiq_abort.api import abort, find_middleware
from taskiq_abort.backends import AbortBackend, MemoryAbortBackend, RedisAbortBackend
from taskiq_abort.errors import (
    AbortBackendError,
    AbortBackendUnavailableError,
    AbortConfigError,
    AbortPermissionError,
    InvalidTaskIdError,
    TaskAbortedError,
    TaskiqAbortError,
)
from taskiq_abort.handle import AbortableDecoratedTask, AbortableTask, abortable_task
from taskiq_abort.middleware import AbortMiddleware
from taskiq_abort.observability import AbortObservability
from taskiq_abort.outcome import AbortOutcome, AbortStatus
from taskiq_abort.token import AbortToken, shield

__version__ = "0.1.0"

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
    "TaskiqAbortError",
    "__version__",
    "abort",
    "abortable_task",
    "find_middleware",
    "shield",
]
