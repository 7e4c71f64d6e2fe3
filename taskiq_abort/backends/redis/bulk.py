"""Bulk aborts on Redis: many requests in one script call and one message per holding worker;
many confirmations in one script call and one reply message per reply channel.

Aborting 10,000 tasks one by one costs 10,000 script calls, 10,000 messages to the worker,
10,000 confirmation calls and 10,000 replies. Here it costs ``n / BATCH`` calls each way and
about one message per worker (or reply channel) per 8 kB. Each script call takes at most
``BATCH`` ids, so that one call never holds Redis for long (a few ms). See docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from taskiq_abort.backends.base import Confirmation, RequestResult
from taskiq_abort.backends.redis.connect import call
from taskiq_abort.backends.redis.scripts import HOLDERS, NOW, RECORD_OUTCOME, RECORD_REQUEST
from taskiq_abort.protocol import MAX_MESSAGE_BYTES, reply_payloads

if TYPE_CHECKING:
    from taskiq_abort.backends.redis.backend import RedisAbortBackend

BATCH = 1000
"""Ids per script call."""

# REQUEST for many ids in one atomic call: record every request exactly as REQUEST does (the
# first reason and the shortest grace stand, the life covers the grace and the ETA marker), then
# group the ids by holder (from the index) and publish one `abort_many` message per holding
# worker and (reason, at, grace): ids requested now share all three; ids requested earlier keep
# their first reason and time, and maybe a shorter grace, as with REQUEST. Each message stays
# within max_bytes. Liveness and stale index entries as in REQUEST.
# KEYS: holders index, workers zset
# ARGV: request_prefix, has_reason, reason, ttl_ms, requested_by, reply_channel,
#       worker_channel_prefix, tasks_prefix, grace_ms, max_bytes, eta_prefix, task_id*
# Returns one {live holders or false, first holder's entry or false, outcome so far or false,
# receivers, stored reason or false} per task id, in order (REQUEST's reply for each).
REQUEST_MANY = (
    NOW
    + HOLDERS
    + RECORD_REQUEST
    + """
local req, rc, wchan, tasks, eta = ARGV[1], ARGV[6], ARGV[7], ARGV[8], ARGV[11]
local ttl, asked, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[9]), tonumber(ARGV[10])
local found, groups, by_key = {}, {}, {}
for i = 12, #ARGV do
  local tid = ARGV[i]
  local key = req .. tid
  local outcome = redis.call('HGET', key, 'outcome')
  local grace, reason, at = record_request(
    key, eta .. tid, ARGV[5], ARGV[2], ARGV[3], rc, ttl, asked)
  local wids = {}
  local cur = redis.call('HGET', KEYS[1], tid)
  if cur then
    for wid in string.gmatch(cur, '%S+') do
      wids[#wids + 1] = wid
      local gkey = wid .. ' ' .. at .. ' ' .. grace .. ' ' .. (reason and ('+' .. reason) or '-')
      local group = by_key[gkey]
      if not group then
        group = {wid = wid, at = at, grace = grace, reason = reason, ids = {}}
        by_key[gkey] = group
        groups[#groups + 1] = group
      end
      group.ids[#group.ids + 1] = tid
    end
  end
  found[#found + 1] = {tid, wids, outcome, reason}
end
local function message(group, ids)
  local fields = {v = 2, type = 'abort_many', task_ids = ids,
                  reason = group.reason or cjson.null, reply_to = rc, at = group.at}
  if group.grace > 0 then fields.grace = group.grace / 1000 end
  return cjson.encode(fields)
end
local heard = {}
local function send(group, ids)
  local n = redis.call('PUBLISH', wchan .. group.wid, message(group, ids))
  heard[group.wid] = math.max(heard[group.wid] or 0, n)
end
for _, group in ipairs(groups) do
  local base = #message(group, {'x'}) - 3  -- the message with an empty list
  local chunk, size = {}, base
  for _, tid in ipairs(group.ids) do
    local len = #cjson.encode(tid) + 1  -- and a comma (one fewer than ids: size - 1 is exact)
    if #chunk > 0 and size + len - 1 > max_bytes then
      send(group, chunk)
      chunk, size = {}, base
    end
    chunk[#chunk + 1] = tid
    size = size + len
  end
  send(group, chunk)
end
local live_of, lease_of = {}, {}
local function alive(wid)
  if live_of[wid] == nil then
    -- alive if its lease is current or it listens on its channel (REQUEST says why)
    local lease = redis.call('ZSCORE', KEYS[2], wid)
    lease_of[wid] = lease
    live_of[wid] = heard[wid] > 0 or (lease ~= false and tonumber(lease) >= now)
  end
  return live_of[wid]
end
local out = {}
for _, f in ipairs(found) do
  local tid, live, entry, receivers = f[1], {}, false, 0
  for _, wid in ipairs(f[2]) do
    if alive(wid) then
      live[#live + 1] = wid
      receivers = receivers + heard[wid]
      if not entry then entry = redis.call('HGET', tasks .. wid, tid) end
    elseif not lease_of[wid] then
      holders_remove(KEYS[1], tid, wid)  -- its worker is gone: an index entry it left behind
    end
  end
  local holders = false
  if #live > 0 then holders = table.concat(live, ' ') end
  out[#out + 1] = {holders, entry, f[3], receivers, f[4]}
end
return out
"""
)

# CONFIRM for many ids in one atomic call: record every outcome as CONFIRM does, then publish
# the reply messages (built by the worker: one per reply channel, see protocol.reply_payloads).
# KEYS: holders index (any key of the prefix: it names the slot)
# ARGV: request_prefix, worker_id, n, [task_id, outcome, forced]*n, [channel, payload]*
CONFIRM_MANY = (
    RECORD_OUTCOME
    + """
local req, wid = ARGV[1], ARGV[2]
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  record_outcome(req .. ARGV[i], ARGV[i + 1], wid, ARGV[i + 2])
  i = i + 3
end
while i < #ARGV do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
"""
)


def _some(task_ids: Sequence[str]) -> str:
    shown = ", ".join(task_ids[:3])
    return f"{len(task_ids)} tasks ({shown}{', ...' if len(task_ids) > 3 else ''})"


async def request_many(
    backend: RedisAbortBackend,
    task_ids: Sequence[str],
    reason: str | None,
    requested_by: str,
    grace: float,
) -> list[RequestResult]:
    """``REQUEST_MANY`` per ``BATCH`` ids; one :class:`RequestResult` per id, in order."""
    from taskiq_abort.backends.redis.clients import request_result

    keys = backend.keys
    head: list[Any] = [
        keys.request_prefix,
        "0" if reason is None else "1",
        reason or "",
        int(backend.request_ttl * 1000),
        requested_by,
        backend.reply_channel,
        keys.worker_channel_prefix,
        keys.tasks_prefix,
        round(grace * 1000),
        MAX_MESSAGE_BYTES,
        keys.eta(""),
    ]
    results: list[RequestResult] = []
    for start in range(0, len(task_ids), BATCH):
        chunk = list(task_ids[start : start + BATCH])
        op = backend._c.request_many([keys.holders, keys.workers], head + chunk)
        rows = await call(backend.where, keys, f"recording the aborts of {_some(chunk)}", op)
        results += (request_result(tid, row) for tid, row in zip(chunk, rows, strict=True))
    return results


async def confirm_many(
    backend: RedisAbortBackend, worker_id: str, confirmations: Sequence[Confirmation]
) -> None:
    """``CONFIRM_MANY`` per ``BATCH`` confirmations, with one reply message per reply channel
    (more when they do not fit in one)."""
    keys = backend.keys
    for start in range(0, len(confirmations), BATCH):
        chunk = confirmations[start : start + BATCH]
        args: list[Any] = [keys.request_prefix, worker_id, len(chunk)]
        by_channel: dict[str, list[tuple[str, str, bool]]] = {}
        for item in chunk:
            args += [item.task_id, item.outcome, "1" if item.forced else "0"]
            for channel in dict.fromkeys(item.reply_to):
                if channel:
                    by_channel.setdefault(channel, []).append(
                        (item.task_id, item.outcome, item.forced)
                    )
        for channel, items in by_channel.items():
            for payload in reply_payloads(worker_id, items):
                args += [channel, payload]
        what = f"confirming the aborts of {_some([c.task_id for c in chunk])}"
        await call(backend.where, keys, what, backend._c.confirm_many([keys.holders], args))
