"""Lua scripts: each state change on the control plane is one atomic round trip.

Atomicity is what makes the start race safe: a worker's "is there an abort request? else register
as running" and an aborter's "record the request, find the holders, tell them" never interleave.
Every key a script touches, and every channel it publishes to, carries the prefix's hash tag
(``keys.KeySpace``), so each script runs in one Redis Cluster slot. Scripts build some key names
from the prefixes they are given (a request key per started task, a worker's hashes), which
Redis allows for keys of the declared keys' slot. See docs/protocol.md.
"""

from __future__ import annotations

# Server time in ms; leases are compared on the Redis clock so worker clocks may drift.
NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The holder index: HASH task id -> space-separated ids of the workers running it (usually one;
# several for brokers that deliver a task to every worker, like taskiq-redis's PubSubBroker).
HOLDERS = """
local function holders_add(index, tid, wid)
  local cur = redis.call('HGET', index, tid)
  if not cur then
    redis.call('HSET', index, tid, wid)
  elseif not string.find(' ' .. cur .. ' ', ' ' .. wid .. ' ', 1, true) then
    redis.call('HSET', index, tid, cur .. ' ' .. wid)
  end
end
local function holders_remove(index, tid, wid)
  local cur = redis.call('HGET', index, tid)
  if not cur then return end
  if cur == wid then redis.call('HDEL', index, tid); return end
  local rest = {}
  for w in string.gmatch(cur, '%S+') do
    if w ~= wid then rest[#rest + 1] = w end
  end
  if #rest == 0 then redis.call('HDEL', index, tid)
  else redis.call('HSET', index, tid, table.concat(rest, ' ')) end
end
-- Take every task of a worker out of the index, and its registration out of Redis.
local function drop_worker(index, workers, wkey, tkey, wid)
  local tids = redis.call('HKEYS', tkey)
  for _, tid in ipairs(tids) do holders_remove(index, tid, wid) end
  redis.call('DEL', wkey, tkey)
  redis.call('ZREM', workers, wid)
end
"""

# How long a request is kept: ``ttl`` ms, or longer for a task kicked with a delay beyond it.
# Its ETA marker ({P}:eta:<id>, written at the kick) lives until the task's ETA + request_ttl,
# so its PTTL is exactly the life the request needs to refuse the task when it arrives.
REQUEST_LIFE = """
local function request_life(ttl, eta_key)
  local eta = redis.call('PTTL', eta_key)
  if eta > ttl then return eta end
  return ttl
end
"""

# Record an abort request in hash `key`, the same for REQUEST and REQUEST_MANY (bulk.py):
# create it unless it exists (the first reason and time stand), note the latest aborter's reply
# channel, keep the shortest grace (a second abort can only bring the forced stop closer), and
# make it live at least request_life(ttl, eta_key) and grace + ttl (a worker that resyncs during
# the grace period must still find it). Needs NOW. Returns the grace, reason and time stored.
RECORD_REQUEST = (
    REQUEST_LIFE
    + """
local function record_request(key, eta_key, by, has_reason, reason, rc, ttl, asked)
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'at', now, 'by', by)
    if has_reason == '1' then redis.call('HSET', key, 'reason', reason) end
  end
  local grace = asked
  local before = tonumber(redis.call('HGET', key, 'grace') or grace)
  if before < grace then grace = before end
  redis.call('HSET', key, 'rc', rc, 'grace', grace)
  local life = request_life(ttl, eta_key)
  if grace + ttl > life then life = grace + ttl end
  redis.call('PEXPIRE', key, life)
  return grace, redis.call('HGET', key, 'reason'), tonumber(redis.call('HGET', key, 'at'))
end
"""
)

# Append {task_id, has_reason, reason, reply channel, at, grace_ms} to `list` when `task_id` has
# an abort request; returns whether it has one. A request settled 'finished' (the task ended
# with its own result first, kept a while to answer late aborters) stops nothing: the next
# attempt with that id (a retry, a re-kick) runs.
_NOTE_REQUEST = """
local function note_request(list, req, tid)
  local r = redis.call('HMGET', req .. tid, 'at', 'reason', 'rc', 'grace', 'outcome')
  if not r[1] or r[5] == 'finished' then return false end
  list[#list + 1] = tid
  list[#list + 1] = r[2] and 1 or 0
  list[#list + 1] = r[2] or ''
  list[#list + 1] = r[3] or ''
  list[#list + 1] = r[1]
  list[#list + 1] = r[4] or '0'
  return true
end
"""

# The worker's hot path, batched: register starts and drop finishes in one round trip.
# KEYS: worker hash, tasks hash, holders index
# ARGV: lease_ms, request_prefix, worker_id, n_starts, [task_id, value]*n, n_finishes,
#       [task_id, run_id]*n
# Returns {worker_alive, {task_id, has_reason, reason, reply_channel, at, grace_ms, ...}} for
# starts that were already aborted; those are not registered (they must not run) and are
# marked revoked in their request.
SYNC = (
    HOLDERS
    + _NOTE_REQUEST
    + """
local lease = tonumber(ARGV[1])
local req, wid = ARGV[2], ARGV[3]
local i = 4
local nstart = tonumber(ARGV[i]); i = i + 1
local aborted = {}
for _ = 1, nstart do
  local tid, value = ARGV[i], ARGV[i + 1]; i = i + 2
  if note_request(aborted, req, tid) then
    if redis.call('HSETNX', req .. tid, 'outcome', 'revoked') == 1 then
      redis.call('HSET', req .. tid, 'worker', wid)  -- who refused it
    end
  else
    redis.call('HSET', KEYS[2], tid, value)
    holders_add(KEYS[3], tid, wid)
  end
end
local nfin = tonumber(ARGV[i]); i = i + 1
for _ = 1, nfin do
  local tid, run = ARGV[i], ARGV[i + 1]; i = i + 2
  local cur = redis.call('HGET', KEYS[2], tid)
  if cur and string.sub(cur, 1, #run + 1) == run .. ' ' then
    redis.call('HDEL', KEYS[2], tid)
    holders_remove(KEYS[3], tid, wid)
  end
end
if nstart > 0 then redis.call('PEXPIRE', KEYS[2], 3 * lease) end
return {redis.call('EXISTS', KEYS[1]), aborted}
"""
)

# The master's replication id: a promoted replica takes a new one, so it names the master's
# history (a worker registered under another id has not re-registered since a failover).
REPLICATION_ID = """
local function replication_id()
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)')
end
"""

# (Re)register a worker and everything it runs, e.g. at start-up, after a reconnect or after
# Redis lost its data. Also answers which of those tasks have an abort request pending.
# KEYS: worker hash, tasks hash, workers zset, holders index
# ARGV: lease_ms, worker_id, request_prefix, n_info, [field, value]*n, n_tasks, [task_id, value]*n,
#       stamp ('1': note the master's replication id as the worker's `epoch`, for REVOKE)
# The tasks hash outlives the lease (3x): a crashed worker's entries stay readable for a while
# after its lease lapsed, so that a live worker's heartbeat can take them out of the index.
REGISTER = (
    NOW
    + HOLDERS
    + _NOTE_REQUEST
    + REPLICATION_ID
    + """
local lease = tonumber(ARGV[1])
local wid, req = ARGV[2], ARGV[3]
local i = 4
local ninfo = tonumber(ARGV[i]); i = i + 1
drop_worker(KEYS[4], KEYS[3], KEYS[1], KEYS[2], wid)
for _ = 1, ninfo do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2
end
local ntasks = tonumber(ARGV[i]); i = i + 1
local aborted = {}
for _ = 1, ntasks do
  local tid, value = ARGV[i], ARGV[i + 1]; i = i + 2
  redis.call('HSET', KEYS[2], tid, value)
  holders_add(KEYS[4], tid, wid)
  note_request(aborted, req, tid)
end
if ARGV[i] == '1' then redis.call('HSET', KEYS[1], 'epoch', replication_id()) end
redis.call('PEXPIRE', KEYS[1], lease)
if ntasks > 0 then redis.call('PEXPIRE', KEYS[2], 3 * lease) end
redis.call('ZADD', KEYS[3], now + lease, wid)
return aborted
"""
)

# KEYS: worker hash, tasks hash, workers zset, holders index
# ARGV: lease_ms, worker_id, worker_prefix, tasks_prefix, worker_channel_prefix, epoch check
# ('1': also 0 when the worker registered with another master, so that it registers with this
# one, which REVOKE waits for)
# Returns 0 when the worker's registration is gone (lease lapsed or Redis lost its data), else
# Redis TIME in ms (the worker's estimate of the Redis clock, for delivery-time metrics).
# Also takes out of the registry a few workers whose lease lapsed and who no longer listen on
# their channel (crashed: no unregister). One that still listens is alive but stalled (a long
# event-loop turn): it keeps its entries and re-registers at its next heartbeat.
HEARTBEAT = (
    NOW
    + HOLDERS
    + REPLICATION_ID
    + """
local lease = tonumber(ARGV[1])
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 16)) do
  local listening = redis.call('PUBSUB', 'NUMSUB', ARGV[5] .. dead)[2]
  if dead ~= ARGV[2] and tonumber(listening) == 0 then
    drop_worker(KEYS[4], KEYS[3], ARGV[3] .. dead, ARGV[4] .. dead, dead)
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[6] == '1' and redis.call('HGET', KEYS[1], 'epoch') ~= replication_id() then return 0 end
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PEXPIRE', KEYS[2], 3 * lease)
redis.call('ZADD', KEYS[3], now + lease, ARGV[2])
return now
"""
)

# A clean shutdown. KEYS: worker hash, tasks hash, workers zset, holders index; ARGV: worker_id
UNREGISTER = (
    HOLDERS
    + """
drop_worker(KEYS[4], KEYS[3], KEYS[1], KEYS[2], ARGV[1])
return 1
"""
)

# Durable before fast: record the request, then find the holders in the index and tell each of
# them on its own channel. Nobody else hears it: a task nobody holds is caught by the start
# check (SYNC), however late it starts.
# KEYS: request hash, holders index, workers zset, the task's ETA marker
# ARGV: task_id, has_reason, reason, ttl_ms, requested_by, reply_channel, worker_channel_prefix,
#       tasks_prefix, grace_ms (the shortest grace of the requests stands: 0 means "now")
# Returns {live holders (space-separated) or false, the first holder's entry or false, outcome so
# far or false, receivers, the stored reason or false}. The first request's reason stands.
REQUEST = (
    NOW
    + HOLDERS
    + RECORD_REQUEST
    + """
local tid = ARGV[1]
local outcome = redis.call('HGET', KEYS[1], 'outcome')
local grace, reason, at = record_request(
  KEYS[1], KEYS[4], ARGV[5], ARGV[2], ARGV[3], ARGV[6], tonumber(ARGV[4]), tonumber(ARGV[9]))
local live, entry, receivers = {}, false, 0
local cur = redis.call('HGET', KEYS[2], tid)
if cur then
  local fields = {v = 2, type = 'abort', task_id = tid,
                  reason = reason or cjson.null, reply_to = ARGV[6], at = at}
  if grace > 0 then fields.grace = grace / 1000 end
  local message = cjson.encode(fields)
  for wid in string.gmatch(cur, '%S+') do
    -- A holder is alive if its lease is current or it listens on its channel (a worker whose
    -- event loop stalled past its lease still holds the task, and will hear this).
    local heard = redis.call('PUBLISH', ARGV[7] .. wid, message)
    local lease = redis.call('ZSCORE', KEYS[3], wid)
    if heard > 0 or (lease and tonumber(lease) >= now) then
      live[#live + 1] = wid
      receivers = receivers + heard
      if not entry then entry = redis.call('HGET', ARGV[8] .. wid, tid) end
    elseif not lease then
      holders_remove(KEYS[2], tid, wid)  -- its worker is gone: an index entry it left behind
    end
  end
end
local holders = false
if #live > 0 then holders = table.concat(live, ' ') end
return {holders, entry, outcome, receivers, reason}
"""
)

# Record how an abort ended (if the request still exists and no outcome was recorded yet: the
# first word stands). 'unknown' (the attempt ended without a result, e.g. a retry is coming) is
# not how the abort ended: nothing is recorded. 'finished' (the task ended with its own result
# before the abort landed) makes the request moot: it is kept 5 minutes (at most), so that an
# aborter whose reply was lost reads 'finished' rather than a missing record, which a failover
# can also cause. Shared by CONFIRM and CONFIRM_MANY (bulk.py).
RECORD_OUTCOME = """
local function record_outcome(key, outcome, wid, forced)
  if outcome ~= 'unknown' and redis.call('EXISTS', key) == 1 then
    if redis.call('HSETNX', key, 'outcome', outcome) == 1 then
      redis.call('HSET', key, 'worker', wid)
      if forced == '1' then redis.call('HSET', key, 'forced', '1') end
      if outcome == 'finished' and redis.call('PTTL', key) > 300000 then
        redis.call('PEXPIRE', key, 300000)  -- moot: kept 5 minutes, to answer late askers
      end
    end
  end
end
"""

# Record how an abort ended, then tell the aborters that asked.
# KEYS: request hash; ARGV: outcome, worker_id, payload, forced ('1': after its grace ran out),
# reply channel*
CONFIRM = (
    RECORD_OUTCOME
    + """
record_outcome(KEYS[1], ARGV[1], ARGV[2], ARGV[4])
for i = 5, #ARGV do redis.call('PUBLISH', ARGV[i], ARGV[3]) end
return 1
"""
)

# Every live worker with its info and running tasks, in one round trip (for `ls`, `status`).
# KEYS: workers zset; ARGV: worker_prefix, tasks_prefix
LIST = (
    NOW
    + """
local out = {}
for _, wid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  local info = redis.call('HGETALL', ARGV[1] .. wid)
  out[#out + 1] = {wid, info, redis.call('HGETALL', ARGV[2] .. wid)}
end
return out
"""
)

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
REVOKE = (
    NOW
    + REQUEST_LIFE
    + REPLICATION_ID
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if KEYS[3] then
  local epoch = replication_id()
  for _, wid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')) do
    local registered = redis.call('HGET', ARGV[3] .. wid, 'epoch')
    if registered and registered ~= epoch then return {wid} end
  end
end
if redis.call('HSETNX', KEYS[1], 'outcome', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'worker', '')  -- revoked by the aborter: no worker confirmed it
end
redis.call('PEXPIRE', KEYS[1], request_life(tonumber(ARGV[2]), KEYS[2]))
return redis.call('HGET', KEYS[1], 'outcome')
"""
)


# The aborter found nobody holding the task and no result: it claims the revoke before it
# stores the task's TaskAbortedError result, so that an aborter that finds that result before
# the outcome is recorded takes it for ours, not the task's own (SETTLE). Any number may claim
# it: they store the same result. KEYS: request hash. Returns 1, or 0 when the request is gone.
REVOKING = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'revoking', '1')
return 1
"""


# The aborter found a result and nobody holding the task: did a worker refuse or abort it
# because of our request, or did an aborter claim its revoke (REVOKING) and store that result
# (then it is revoked), or did it finish on its own (then the request is moot: recorded
# 'finished' and kept 5 minutes at most, as CONFIRM does, so that an aborter settling it at the
# same time finds it rather than a request lost in a failover)? Always a write, for the WAIT
# behind it, like REVOKE: a stale master (one that was failed over and still serves a few
# seconds) must not answer "finished".
# KEYS: request hash, ETA marker; ARGV: ttl_ms. Returns {outcome, worker}, {'', ''} when the
# task finished, or false when the request is gone (lost in a failover).
SETTLE = (
    REQUEST_LIFE
    + RECORD_OUTCOME
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local r = redis.call('HMGET', KEYS[1], 'outcome', 'worker', 'revoking')
if not r[1] and r[3] then  -- the result is the claimant's: the revoke stands, whoever says it
  redis.call('HSET', KEYS[1], 'outcome', 'revoked', 'worker', '')
  r[1], r[2] = 'revoked', ''
end
if r[1] == 'revoked' or r[1] == 'aborted' then
  redis.call('PEXPIRE', KEYS[1], request_life(tonumber(ARGV[1]), KEYS[2]))
  return {r[1], r[2] or ''}
end
record_outcome(KEYS[1], 'finished', '', '0')
redis.call('HSET', KEYS[1], 'outcome', 'finished')  -- a write even if it was: for the WAIT
return {'', ''}
"""
)


def sharded(script: str) -> str:
    """``script`` publishing with SPUBLISH (and counting subscribers with SHARDNUMSUB): a
    Cluster's sharded pub/sub, delivered by the slot's own master (a classic PUBLISH would cross
    the cluster bus and reach every node).

    >>> sharded("redis.call('PUBLISH', ch, m)")
    "redis.call('SPUBLISH', ch, m)"
    """
    script = script.replace("redis.call('PUBSUB', 'NUMSUB'", "redis.call('PUBSUB', 'SHARDNUMSUB'")
    return script.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
