
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
