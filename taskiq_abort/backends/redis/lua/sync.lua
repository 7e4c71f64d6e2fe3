
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
