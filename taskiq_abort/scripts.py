"""Lua scripts: each state change on the control plane is one atomic round trip.

Atomicity is what makes the start race safe: a worker's "is there an abort request? else register
as running" and an aborter's "record the request, find the holder, broadcast" never interleave.
Keys built inside the scripts (request and per-worker keys) make them single-instance only
(no Redis Cluster); see docs/protocol.md.
"""

from __future__ import annotations

# Server time in ms; leases are compared on the Redis clock so worker clocks may drift.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Append {task_id, has_reason, reason} to `list` when `task_id` has an abort request; returns
# whether it has one.
_NOTE_REQUEST = """
local function note_request(list, req, tid)
  if redis.call('EXISTS', req .. tid) == 0 then return false end
  local reason = redis.call('HGET', req .. tid, 'reason')
  list[#list + 1] = tid
  list[#list + 1] = reason and 1 or 0
  list[#list + 1] = reason or ''
  return true
end
"""

# KEYS: worker hash, tasks hash
# ARGV: lease_ms, request_prefix, n_starts, [task_id, value]*n, n_finishes, [task_id, run_id]*n
# Returns {worker_alive, {task_id, has_reason, reason, ...}} for starts that were already aborted;
# those are marked revoked in their request, so an aborter that finds their result knows why.
SYNC = (
    _NOTE_REQUEST
    + """
local lease = tonumber(ARGV[1])
local req = ARGV[2]
local i = 3
local nstart = tonumber(ARGV[i]); i = i + 1
local aborted = {}
for _ = 1, nstart do
  local tid, value = ARGV[i], ARGV[i + 1]; i = i + 2
  if note_request(aborted, req, tid) then
    redis.call('HSETNX', req .. tid, 'outcome', 'revoked')
  else
    redis.call('HSET', KEYS[2], tid, value)
  end
end
local nfin = tonumber(ARGV[i]); i = i + 1
for _ = 1, nfin do
  local tid, run = ARGV[i], ARGV[i + 1]; i = i + 2
  local cur = redis.call('HGET', KEYS[2], tid)
  if cur and string.sub(cur, 1, #run + 1) == run .. ' ' then
    redis.call('HDEL', KEYS[2], tid)
  end
end
if nstart > 0 then redis.call('PEXPIRE', KEYS[2], lease) end
return {redis.call('EXISTS', KEYS[1]), aborted}
"""
)

# (Re)register a worker and everything it runs, e.g. at start-up, after a reconnect or after
# Redis lost its data. Also answers which of those tasks have an abort request pending.
# KEYS: worker hash, tasks hash, workers zset
# ARGV: lease_ms, worker_id, request_prefix, n_info, [field, value]*n, n_tasks, [task_id, value]*n
REGISTER = (
    _NOW
    + _NOTE_REQUEST
    + """
local lease = tonumber(ARGV[1])
local wid, req = ARGV[2], ARGV[3]
local i = 4
local ninfo = tonumber(ARGV[i]); i = i + 1
redis.call('DEL', KEYS[1], KEYS[2])
for _ = 1, ninfo do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2
end
local ntasks = tonumber(ARGV[i]); i = i + 1
local aborted = {}
for _ = 1, ntasks do
  local tid, value = ARGV[i], ARGV[i + 1]; i = i + 2
  redis.call('HSET', KEYS[2], tid, value)
  note_request(aborted, req, tid)
end
redis.call('PEXPIRE', KEYS[1], lease)
if ntasks > 0 then redis.call('PEXPIRE', KEYS[2], lease) end
redis.call('ZADD', KEYS[3], now + lease, wid)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
return aborted
"""
)

# KEYS: worker hash, tasks hash, workers zset; ARGV: lease_ms, worker_id
# Returns 0 when the worker's registration is gone (lease lapsed or Redis lost its data), else
# Redis TIME in ms (the worker's estimate of the Redis clock, for delivery-time metrics).
HEARTBEAT = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PEXPIRE', KEYS[2], lease)
redis.call('ZADD', KEYS[3], now + lease, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
return now
"""
)

# Durable before fast: record the request, then find its holder, then broadcast.
# KEYS: request hash, workers zset
# ARGV: task_id, has_reason, reason, ttl_ms, requested_by, tasks_prefix, channel
# Returns {holder or false, holder's entry or false, outcome so far or false, receivers,
# the stored reason or false}. The first request's reason stands, and is the one broadcast.
REQUEST = (
    _NOW
    + """
local tid = ARGV[1]
local outcome = redis.call('HGET', KEYS[1], 'outcome')
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'at', now, 'by', ARGV[5])
  if ARGV[2] == '1' then redis.call('HSET', KEYS[1], 'reason', ARGV[3]) end
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
local holder, entry = false, false
for _, wid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], now, '+inf')) do
  local v = redis.call('HGET', ARGV[6] .. wid, tid)
  if v then holder, entry = wid, v; break end
end
local reason = redis.call('HGET', KEYS[1], 'reason')
local message = cjson.encode({v = 1, type = 'abort', task_id = tid, reason = reason or cjson.null,
  at = tonumber(redis.call('HGET', KEYS[1], 'at')), by = redis.call('HGET', KEYS[1], 'by')})
local receivers = redis.call('PUBLISH', ARGV[7], message)
return {holder, entry, outcome, receivers, reason}
"""
)

# Record how an abort ended (if the request still exists and no outcome was recorded yet: the
# first word stands), then tell the aborters.
# KEYS: request hash; ARGV: outcome, worker_id, channel, payload (payload '' = no publish)
# 'unknown' (the attempt ended without a result, e.g. a retry is coming) only replies: it is not
# how the abort ended, and the first outcome recorded is the one that stands.
CONFIRM = """
if ARGV[1] ~= 'unknown' and redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HSETNX', KEYS[1], 'outcome', ARGV[1]) == 1 then
    redis.call('HSET', KEYS[1], 'worker', ARGV[2])
  end
end
if ARGV[4] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"""

# Every live worker with its info and running tasks, in one round trip (for `ls`, `status`).
# KEYS: workers zset; ARGV: worker_prefix, tasks_prefix
LIST = (
    _NOW
    + """
local out = {}
for _, wid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  local info = redis.call('HGETALL', ARGV[1] .. wid)
  out[#out + 1] = {wid, info, redis.call('HGETALL', ARGV[2] .. wid)}
end
return out
"""
)
