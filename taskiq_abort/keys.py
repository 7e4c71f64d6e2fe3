"""Where taskiq-abort keeps things in Redis. The layout is documented in ``docs/protocol.md``."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "taskiq_abort"


@dataclass(frozen=True)
class KeySpace:
    """Key names under one prefix; several apps sharing one Redis use different prefixes.

    >>> ks = KeySpace("myapp")
    >>> ks.request("t1"), ks.tasks("w1"), ks.control, ks.reply
    ('myapp:req:t1', 'myapp:tasks:w1', 'myapp:control', 'myapp:control:reply')
    """

    prefix: str = DEFAULT_PREFIX
    channel: str | None = None

    def __post_init__(self) -> None:
        if not self.prefix or any(ord(ch) < 33 for ch in self.prefix):
            raise ValueError(
                f"invalid key prefix {self.prefix!r}: use a non-empty word like 'myapp'"
            )

    @property
    def control(self) -> str:
        """The pub/sub channel abort requests are broadcast on."""
        return self.channel or f"{self.prefix}:control"

    @property
    def reply(self) -> str:
        """The pub/sub channel workers confirm aborts on."""
        return f"{self.control}:reply"

    @property
    def request_prefix(self) -> str:
        return f"{self.prefix}:req:"

    def request(self, task_id: str) -> str:
        """HASH: the durable abort request for ``task_id`` (reason, at, by, outcome, worker)."""
        return self.request_prefix + task_id

    @property
    def workers(self) -> str:
        """ZSET: live worker ids, scored by the lease expiry (ms since the epoch, Redis clock)."""
        return f"{self.prefix}:workers"

    def worker(self, worker_id: str) -> str:
        """HASH: who a worker is (host, pid, started); expires with the worker's lease."""
        return f"{self.prefix}:worker:{worker_id}"

    @property
    def tasks_prefix(self) -> str:
        return f"{self.prefix}:tasks:"

    def tasks(self, worker_id: str) -> str:
        """HASH: task id -> "<run id> <started> <name>" per running task; expires with the lease."""
        return self.tasks_prefix + worker_id
