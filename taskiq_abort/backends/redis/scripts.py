"""Lua scripts: each state change on the control plane is one atomic round trip.

Atomicity is what makes the start race safe: a worker's "is there an abort request? else register
as running" and an aborter's "record the request, find the holders, tell them" never interleave.
Every key a script touches, and every channel it publishes to, carries the prefix's hash tag
(``keys.KeySpace``), so each script runs in one Redis Cluster slot. Scripts build some key names
from the prefixes they are given (a request key per started task, a worker's hashes), which
Redis allows for keys of the declared keys' slot. See docs/protocol.md.
"""

from __future__ import annotations

from importlib.resources import files


def _lua(name: str) -> str:
    """The text of ``lua/<name>.lua``, shipped in the wheel as package data."""
    return (files(__package__) / "lua" / f"{name}.lua").read_text(encoding="utf-8")


# Server time in ms; leases are compared on the Redis clock so worker clocks may drift.
NOW = _lua("now")

# The holder index: HASH task id -> space-separated ids of the workers running it (usually one;
# several for brokers that deliver a task to every worker, like taskiq-redis's PubSubBroker).
HOLDERS = _lua("holders")

# How long a request is kept: ``ttl`` ms, or longer for a task kicked with a delay beyond it.
# Its ETA marker ({P}:eta:<id>, written at the kick) lives until the task's ETA + request_ttl,
# so its PTTL is exactly the life the request needs to refuse the task when it arrives.
REQUEST_LIFE = _lua("request_life")

# Record an abort request in hash `key`, the same for REQUEST and REQUEST_MANY (below):
# create it unless it exists (the first reason and time stand), note the latest aborter's reply
# channel, keep the shortest grace (a second abort can only bring the forced stop closer), and
# make it live at least request_life(ttl, eta_key) and grace + ttl (a worker that resyncs during
# the grace period must still find it). Needs NOW. Returns the grace, reason and time stored, and
# the outcome recorded before this call. One read of the hash (HGETALL: it is small) before its
# one write.
RECORD_REQUEST = REQUEST_LIFE + _lua("record_request")

# Which holders of a task are alive, for REQUEST and REQUEST_MANY (``wids``: the ids the holder
# index names, ``heard``: how many subscribers each got the abort on its channel, ``leases``: a
# cache of their leases across the ids of one call). Alive: listening on its channel, or a
# current lease (read only for a holder nobody heard on). A holder without a lease is gone: its
# index entry is taken out. Needs NOW and HOLDERS. Returns the live holders (space-separated) or
# false, and how many subscribers got the abort.
LIVE_HOLDERS = _lua("live_holders")

# Append {task_id, has_reason, reason, reply channel, at, grace_ms} to `list` when `task_id` has
# an abort request; returns whether it has one. A request settled 'finished' (the task ended
# with its own result first, kept a while to answer late aborters) stops nothing: the next
# attempt with that id (a retry, a re-kick) runs.
_NOTE_REQUEST = _lua("note_request")

# Where a rule is indexed: rule_index(rule_prefix, pair), the zset of the rules whose first label
# pair (first_pair(labels)) is `pair`. Shared by RULE_ADD, RULE_CANCEL and the start check.
RULE_INDEX = _lua("rule_index")

# The abort rules (abort_where): rule_candidates(set, rule_prefix, labels, cache) reads the live
# ones indexed under the start's label pairs (dropping the ids of expired ones from the index and
# the set), rule_matching(rules, task_name, labels) finds one a start
# falls under (labels: the set of the start's label pairs, `name=value` percent-encoded as in
# outcome.label_pairs: a rule matches a start that has each of its pairs, compared as text);
# refuse_by_rule(...) records the refused start as a revoked request (naming the rule, living the
# rule's ttl) and notes it as note_request does.
_RULES = RULE_INDEX + _lua("rules")

# The worker's hot path, batched: register starts and drop finishes in one round trip.
# KEYS: worker hash, tasks hash, holders index, rules zset
# ARGV: lease_ms, request_prefix, worker_id, rule_prefix, n_starts,
#       [task_id, value, deadline_ms, n_labels, label_pair*n_labels]*n,
#       n_finishes, [task_id, run_token]*n   (deadline_ms: '' or the `expires` deadline)
# The rules are read only when a start carries indexed labels (a worker without index_labels
# never reads them), once per call. A stored request comes first, then a rule, then the deadline.
# Returns {worker_alive, {task_id, has_reason, reason, reply_channel, at, grace_ms, ...},
# {task_id, ms_late, ...}}: the starts that were already aborted (by id or by a rule), not
# registered (they must not run) and marked revoked in their request; then the starts past
# their deadline on the Redis clock (TIME, read only when a start has one), not registered
# either and recorded nowhere.
SYNC = HOLDERS + _NOTE_REQUEST + _RULES + _lua("sync")

# Record abort rules (one, or a cascade's): each hash lives ttl_ms, each id joins the rules zset
# and the index zset of its first label pair (rule_prefix .. 'ix:' .. pair, which the start
# check reads for a start's pairs), scored by its expiry; the expired ids leave both as new ones
# come, and each zset lives as long as its longest rule. Durable (WAIT) like a request.
# KEYS: rules zset, one rule hash per rule; ARGV: ttl_ms, rule_prefix, then per rule: rule_id,
# requested_by, reason, has_name, name, labels ("name=value&...": the label pairs a start must
# all carry). Returns the Redis time (ms) they were recorded at.
RULE_ADD = NOW + RULE_INDEX + _lua("rule_add")

# Remove a rule early, and its id from its index zset. KEYS: rules zset, rule hash; ARGV: rule_id,
# rule_prefix. Returns 1 if it existed.
RULE_CANCEL = RULE_INDEX + _lua("rule_cancel")

# The live rules (the ids of expired ones leave the zset). KEYS: rules zset; ARGV: rule_prefix.
# Returns {rule_id, {field, value, ...}}*.
RULE_LIST = _lua("rule_list")

# The master's replication id: a promoted replica takes a new one, so it names the master's
# history (a worker registered under another id has not re-registered since a failover).
REPLICATION_ID = _lua("replication_id")

# (Re)register a worker and everything it runs, e.g. at start-up, after a reconnect or after
# Redis lost its data. Also answers which of those tasks have an abort request pending.
# A held task with indexed labels that an abort rule matches (one recorded while the worker was
# away, whose aborter could not see the task) gets a pending request naming the rule, and is
# answered like one with a request.
# KEYS: worker hash, tasks hash, workers zset, holders index, rules zset
# ARGV: lease_ms, worker_id, request_prefix, n_info, [field, value]*n, n_tasks, [task_id, value]*n,
#       stamp ('1': note the master's replication id as the worker's `epoch`, for REVOKE),
#       rule_prefix
# The tasks hash outlives the lease (3x): a crashed worker's entries stay readable for a while
# after its lease lapsed, so that a live worker's heartbeat can take them out of the index.
REGISTER = NOW + HOLDERS + _NOTE_REQUEST + _RULES + REPLICATION_ID + _lua("register")

# KEYS: worker hash, tasks hash, workers zset, holders index
# ARGV: lease_ms, worker_id, worker_prefix, tasks_prefix, worker_channel_prefix, epoch check
# ('1': also 0 when the worker registered with another master, so that it registers with this
# one, which REVOKE waits for)
# Returns 0 when the worker's registration is gone (lease lapsed or Redis lost its data), else
# Redis TIME in ms (the worker's estimate of the Redis clock, for delivery-time metrics).
# Also takes out of the registry a few workers whose lease lapsed and who no longer listen on
# their channel (crashed: no unregister). One that still listens is alive but stalled (a long
# event-loop turn): it keeps its entries and re-registers at its next heartbeat.
HEARTBEAT = NOW + HOLDERS + REPLICATION_ID + _lua("heartbeat")

# A clean shutdown. KEYS: worker hash, tasks hash, workers zset, holders index; ARGV: worker_id
UNREGISTER = HOLDERS + _lua("unregister")

# Durable before fast: record the request, then find the holders in the index and tell each of
# them on its own channel. Nobody else hears it: a task nobody holds is caught by the start
# check (SYNC), however late it starts.
# KEYS: request hash, holders index, workers zset, the task's ETA marker
# ARGV: task_id, has_reason, reason, ttl_ms, requested_by, reply_channel, worker_channel_prefix,
#       grace_ms (the shortest grace of the requests stands: 0 means "now")
# Returns {live holders (space-separated) or false, outcome so far or false, receivers, the
# stored reason or false}. The first request's reason stands.
REQUEST = NOW + HOLDERS + RECORD_REQUEST + LIVE_HOLDERS + _lua("request")

# Record how an abort ended (if the request still exists and no outcome was recorded yet: the
# first word stands). 'unknown' (the attempt ended without a result, e.g. a retry is coming) is
# not how the abort ended: nothing is recorded. 'finished' (the task ended with its own result
# before the abort landed) makes the request moot: it is kept 5 minutes (at most), so that an
# aborter whose reply was lost reads 'finished' rather than a missing record, which a failover
# can also cause. Shared by CONFIRM and CONFIRM_MANY.
RECORD_OUTCOME = _lua("record_outcome")

# Record how an abort ended, then tell the aborters that asked.
# KEYS: request hash; ARGV: outcome, worker_id, payload, forced ('1': after its grace ran out),
# reply channel*
CONFIRM = RECORD_OUTCOME + _lua("confirm")

# Every live worker with its info and running tasks, in one round trip (for `ls`, `status`).
# KEYS: workers zset; ARGV: worker_prefix, tasks_prefix
LIST = NOW + _lua("list")

# The aborter's last word before it reports "revoked": the request must still be there (a
# failover may have lost it), and the reply must come only once replicas hold it. So the script
# always writes (it renews the TTL, as a new request would), and the lane sends WAIT right
# behind it on the same connection: WAIT covers every write the master made up to this one,
# including the request itself and any outcome it read. With the workers zset (durable mode),
# "nobody holds it" must also be true of this master: every live worker must have registered
# with it (its `epoch`), or one that ran tasks unregistered through a failover may hold it (a
# worker without `epoch` runs with replicas=0, and promises nothing across failovers).
# KEYS: request hash, ETA marker[, workers zset]; ARGV: outcome, ttl_ms[, worker_prefix].
# Returns the recorded outcome, false when the request is gone, or {worker_id} of a live worker
# not yet registered with this master (nothing written).
_UNREGISTERED_WORKER = REPLICATION_ID + _lua("unregistered_worker")
REVOKE = NOW + REQUEST_LIFE + _UNREGISTERED_WORKER + _lua("revoke")


# The aborter found nobody holding the task and no result: it claims the revoke before it
# stores the task's TaskAbortedError result, so that an aborter that finds that result before
# the outcome is recorded takes it for ours, not the task's own (SETTLE). Any number may claim
# it: they store the same result. Durable like REVOKE (a failover must not lose the claim while
# the result stays), and with the same check that every live worker registered with this
# master: no result may be stored for a revoke that REVOKE would then refuse.
# KEYS: request hash[, workers zset]; ARGV: [worker_prefix]. Returns 1, 0 when the request is
# gone, or {worker_id} of a live worker not yet registered with this master (nothing written).
REVOKING = NOW + _UNREGISTERED_WORKER + _lua("revoking")


# The aborter found a result and nobody holding the task: did a worker refuse or abort it
# because of our request, or did an aborter claim its revoke (REVOKING) and store that result
# (then it is revoked), or did it finish on its own (then the request is moot: recorded
# 'finished' and kept 5 minutes at most, as CONFIRM does, so that an aborter settling it at the
# same time finds it rather than a request lost in a failover)? Always a write, for the WAIT
# behind it, like REVOKE: a stale master (one that was failed over and still serves a few
# seconds) must not answer "finished".
# KEYS: request hash, ETA marker; ARGV: ttl_ms. Returns {outcome, worker}, {'', ''} when the
# task finished, or false when the request is gone (lost in a failover).
SETTLE = REQUEST_LIFE + RECORD_OUTCOME + _lua("settle")


# REQUEST for many ids in one atomic call: record every request exactly as REQUEST does (the
# first reason and the shortest grace stand, the life covers the grace and the ETA marker), then
# group the ids by holder (from the index) and publish one `abort_many` message per holding
# worker and (reason, at, grace): ids requested now share all three; ids requested earlier keep
# their first reason and time, and maybe a shorter grace, as with REQUEST. Each message stays
# within max_bytes. Liveness and stale index entries as in REQUEST.
# KEYS: holders index, workers zset
# ARGV: request_prefix, has_reason, reason, ttl_ms, requested_by, reply_channel,
#       worker_channel_prefix, grace_ms, max_bytes, eta_prefix, task_id*
# Returns one {live holders or false, outcome so far or false, receivers, stored reason or
# false} per task id, in order (REQUEST's reply for each).
REQUEST_MANY = NOW + HOLDERS + RECORD_REQUEST + LIVE_HOLDERS + _lua("request_many")

# CONFIRM for many ids in one atomic call: record every outcome as CONFIRM does, then publish
# the reply messages (built by the worker: one per reply channel, see protocol.reply_payloads).
# KEYS: holders index (any key of the prefix: it names the slot)
# ARGV: request_prefix, worker_id, n, [task_id, outcome, forced]*n, [channel, payload]*
CONFIRM_MANY = RECORD_OUTCOME + _lua("confirm_many")


def sharded(script: str) -> str:
    """``script`` publishing with SPUBLISH (and counting subscribers with SHARDNUMSUB): a
    Cluster's sharded pub/sub, delivered by the slot's own master (a classic PUBLISH would cross
    the cluster bus and reach every node).

    >>> sharded("redis.call('PUBLISH', ch, m)")
    "redis.call('SPUBLISH', ch, m)"
    """
    script = script.replace("redis.call('PUBSUB', 'NUMSUB'", "redis.call('PUBSUB', 'SHARDNUMSUB'")
    return script.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
