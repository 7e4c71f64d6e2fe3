"""Control-plane backends: Redis for real deployments, in-process for InMemoryBroker and tests."""

from taskiq_abort.backends.base import AbortBackend, RequestRecord, RunningEntry, WorkerInfo
from taskiq_abort.backends.memory import MemoryAbortBackend
from taskiq_abort.backends.redis import RedisAbortBackend

__all__ = [
    "AbortBackend",
    "MemoryAbortBackend",
    "RedisAbortBackend",
    "RequestRecord",
    "RunningEntry",
    "WorkerInfo",
]
