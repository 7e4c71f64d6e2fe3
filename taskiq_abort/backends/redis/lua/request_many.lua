
local req, rc, wchan, eta = ARGV[1], ARGV[6], ARGV[7], ARGV[10]
local ttl, asked, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[8]), tonumber(ARGV[9])
local found, groups, by_key = {}, {}, {}
for i = 11, #ARGV do
  local tid = ARGV[i]
  local key = req .. tid
  local grace, reason, at, outcome = record_request(
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
local leases, out = {}, {}
for _, f in ipairs(found) do
  local holders, receivers = live_holders(KEYS[1], KEYS[2], f[1], f[2], heard, leases)
  out[#out + 1] = {holders, f[3], receivers, f[4]}
end
return out
