local tid = ARGV[1]
local grace, reason, at, outcome = record_request(
  KEYS[1], KEYS[4], ARGV[5], ARGV[2], ARGV[3], ARGV[6], tonumber(ARGV[4]), tonumber(ARGV[8]))
local wids, heard = {}, {}
local cur = redis.call('HGET', KEYS[2], tid)
if cur then
  local fields = {v = 2, type = 'abort', task_id = tid,
                  reason = reason or cjson.null, reply_to = ARGV[6], at = at}
  if grace > 0 then fields.grace = grace / 1000 end
  local message = cjson.encode(fields)
  for wid in string.gmatch(cur, '%S+') do
    wids[#wids + 1] = wid
    heard[wid] = redis.call('PUBLISH', ARGV[7] .. wid, message)
  end
end
local holders, receivers = live_holders(KEYS[2], KEYS[3], tid, wids, heard, {})
return {holders, outcome, receivers, reason}
