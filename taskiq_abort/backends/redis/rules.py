"""Abort rules in Redis (``abort_where``): one hash per rule, expiring with it, and a set of
their ids that the start check (``SYNC``) reads when a start carries indexed labels. See
``scripts.py`` (``RULE_ADD``, ``RULE_CANCEL``, ``RULE_LIST``) and docs/protocol.md."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from taskiq_abort._wire.keys import KeySpace
from taskiq_abort.backends.redis import scripts
from taskiq_abort.backends.redis.bulk import Call
from taskiq_abort.backends.redis.clients import LoopClients
from taskiq_abort.backends.redis.lane import LuaScript
from taskiq_abort.outcome import AbortRule, decode_labels, encode_labels

RULE_ADD, RULE_CANCEL, RULE_LIST = (
    LuaScript(src) for src in (scripts.RULE_ADD, scripts.RULE_CANCEL, scripts.RULE_LIST)
)
_RULES_PER_CALL = 500  # a cascade of a bulk abort records two per id: one call holds Redis briefly


class RedisRules:
    """The rule calls of one :class:`~taskiq_abort.backends.redis.RedisAbortBackend`. They go
    over the fence lane, like ``REVOKE``: a rule is recorded durably (``WAIT``), as a request
    is."""

    def __init__(self, keys: KeySpace, clients: Callable[[], LoopClients], call: Call) -> None:
        self.keys = keys
        self._clients = clients  # the running loop's (see ``RedisAbortBackend._c``)
        self._call = call

    async def add_rules(self, rules: Sequence[AbortRule], ttl: float) -> list[AbortRule]:
        """Record ``rules``, :data:`_RULES_PER_CALL` a call."""
        keys, ttl_ms, added = self.keys, max(1, round(ttl * 1000)), []
        for start in range(0, len(rules), _RULES_PER_CALL):
            chunk = rules[start : start + _RULES_PER_CALL]
            args: list[str | int] = [ttl_ms, keys.rule_prefix]
            for rule in chunk:
                args += [rule.rule_id, rule.requested_by, rule.reason]
                args += ["1", rule.task_name] if rule.task_name is not None else ["0", ""]
                args.append(encode_labels(rule.labels.items()))
            hashes = [keys.rule(rule.rule_id) for rule in chunk]
            op = self._clients().fence(RULE_ADD, [keys.rules, *hashes], args, durable=True)
            what = "recording an abort rule" if len(rules) == 1 else "recording abort rules"
            at_ms = int(await self._call(what, op))
            at, expires = at_ms / 1000, (at_ms + ttl_ms) / 1000
            added += [replace(rule, created_at=at, expires_at=expires) for rule in chunk]
        return added

    async def cancel_rule(self, rule_id: str) -> bool:
        keys = self.keys
        op = self._clients().fence(
            RULE_CANCEL, [keys.rules, keys.rule(rule_id)], [rule_id, keys.rule_prefix], durable=True
        )
        return bool(await self._call("removing an abort rule", op))

    async def rules(self) -> list[AbortRule]:
        keys = self.keys
        op = self._clients().fence(RULE_LIST, [keys.rules], [keys.rule_prefix])
        rows = await self._call("listing abort rules", op)
        return [
            rule_from_hash(str(rid), dict(zip(flat[::2], flat[1::2], strict=True)))
            for rid, flat in rows
        ]


def rule_from_hash(rule_id: str, data: dict[str, Any]) -> AbortRule:
    at, ttl = int(data.get("at", 0)), int(data.get("ttl", 0))
    return AbortRule(
        rule_id,
        dict(decode_labels(str(data.get("labels", "")))),
        str(data["name"]) if "name" in data else None,
        str(data.get("reason", "")),
        at / 1000,
        (at + ttl) / 1000,
        str(data.get("by", "")),
    )
