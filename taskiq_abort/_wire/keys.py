"""Where taskiq-abort keeps things in Redis. The layout is documented in ``docs/protocol.md``.

Every key and channel of one prefix carries the hash tag ``{prefix}``, so that they all live in
one Redis Cluster slot: each Lua script touches a single slot, and a script may publish to the
same slot's sharded channels (delivery never crosses the cluster bus).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "taskiq_abort"
DEFAULT_CHANNEL = "ctl"


@dataclass(frozen=True)
class KeySpace:
    """Key and channel names under one prefix; apps sharing one Redis use different prefixes.

    >>> ks = KeySpace("myapp")
    >>> ks.request("t1"), ks.tasks("w1"), ks.holders, ks.eta("t1")
    ('{myapp}:req:t1', '{myapp}:tasks:w1', '{myapp}:holders', '{myapp}:eta:t1')
    >>> ks.worker_channel("w1"), ks.reply_channel("a1")
    ('{myapp}:ctl:w:w1', '{myapp}:ctl:r:a1')
    """

    prefix: str = DEFAULT_PREFIX
    channel: str | None = None
    """Namespace of the control channels (default ``ctl``); always under the prefix's tag."""

    def __post_init__(self) -> None:
        for name, value in (("key prefix", self.prefix), ("channel", self.channel)):
            if value is not None and (not value or any(ord(ch) < 33 or ch in "{}" for ch in value)):
                raise ValueError(
                    f"invalid {name} {value!r}: use a non-empty word like 'myapp' "
                    "(no spaces, control characters or braces)"
                )

    @property
    def tag(self) -> str:
        """``{prefix}``: the hash tag every key and channel starts with."""
        return "{" + self.prefix + "}"

    # --- keys ------------------------------------------------------------------------
    @property
    def request_prefix(self) -> str:
        return f"{self.tag}:req:"

    def request(self, task_id: str) -> str:
        """HASH: the durable abort request for ``task_id`` (reason, at, by, outcome, worker)."""
        return self.request_prefix + task_id

    def eta(self, task_id: str) -> str:
        """STRING: when a task kicked with a delay longer than ``request_ttl`` is due (ms since
        the epoch, the kicker's clock); it lives until then + ``request_ttl``, and a request for
        the task is kept as long."""
        return f"{self.tag}:eta:{task_id}"

    @property
    def workers(self) -> str:
        """ZSET: live worker ids, scored by the lease expiry (ms since the epoch, Redis clock)."""
        return f"{self.tag}:workers"

    @property
    def worker_prefix(self) -> str:
        return f"{self.tag}:worker:"

    def worker(self, worker_id: str) -> str:
        """HASH: who a worker is (host, pid, started); expires with the worker's lease."""
        return self.worker_prefix + worker_id

    @property
    def tasks_prefix(self) -> str:
        return f"{self.tag}:tasks:"

    def tasks(self, worker_id: str) -> str:
        """HASH: task id -> "<run id> <started> <name>" per running task of one worker."""
        return self.tasks_prefix + worker_id

    @property
    def holders(self) -> str:
        """HASH: task id -> the ids of the workers running it, space-separated (the index
        that finds a task's holder without a scan)."""
        return f"{self.tag}:holders"

    @property
    def rules(self) -> str:
        """ZSET: the ids of the abort rules (``abort_where``), scored by when each expires (ms,
        Redis clock); the expired ones leave it as new rules are recorded."""
        return f"{self.tag}:rules"

    @property
    def rule_prefix(self) -> str:
        """Of each rule's hash, and of ``<prefix>ix:<pair>``: the ZSET of the rules whose first
        label pair is ``pair``, scored by expiry (what a start check reads for its pairs)."""
        return f"{self.tag}:rule:"

    def rule(self, rule_id: str) -> str:
        """HASH: one abort rule (``labels``, ``name``, ``reason``, ``at``, ``by``, ``ttl``); it
        expires with the rule."""
        return self.rule_prefix + rule_id

    # --- channels --------------------------------------------------------------------
    @property
    def channel_prefix(self) -> str:
        return f"{self.tag}:{self.channel or DEFAULT_CHANNEL}:"

    @property
    def worker_channel_prefix(self) -> str:
        return self.channel_prefix + "w:"

    def worker_channel(self, worker_id: str) -> str:
        """Pub/sub channel of one worker process: the abort requests for tasks it holds."""
        return self.worker_channel_prefix + worker_id

    def reply_channel(self, aborter_id: str) -> str:
        """Pub/sub channel of one aborting process: the workers' confirmations."""
        return self.channel_prefix + "r:" + aborter_id
