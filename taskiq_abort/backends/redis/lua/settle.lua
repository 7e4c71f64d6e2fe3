
local flat, had = redis.call('HGETALL', KEYS[1]), {}  -- not HMGET: not in aborters' ACLs
if #flat == 0 then return false end
for i = 1, #flat, 2 do had[flat[i]] = flat[i + 1] end
local r = {had.outcome or false, had.worker or false, had.revoking or false}
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
