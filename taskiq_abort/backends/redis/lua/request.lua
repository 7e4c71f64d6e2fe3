
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
