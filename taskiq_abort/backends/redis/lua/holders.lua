
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
