"""Control-plane backends: Redis for real deployments, in-process for InMemoryBroker and tests.

``RedisAbortBackend`` is imported on first use (PEP 562): the contract (``base``) and the
in-process backend import no redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskiq_abort.backends.base import AbortBackend, RequestRecord
from taskiq_abort.backends.memory import MemoryAbortBackend
from taskiq_abort.outcome import RunningEntry, WorkerInfo

if TYPE_CHECKING:
    from taskiq_abort.backends.redis import RedisAbortBackend

__all__ = [
    "AbortBackend",
    "MemoryAbortBackend",
    "RedisAbortBackend",
    "RequestRecord",
    "RunningEntry",
    "WorkerInfo",
]


def __getattr__(name: str) -> Any:
    if name == "RedisAbortBackend":
        from taskiq_abort.backends.redis import RedisAbortBackend

        return RedisAbortBackend
    raise AttributeError(f"module 'taskiq_abort.backends' has no attribute {name!r}")
