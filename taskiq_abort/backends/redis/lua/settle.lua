
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
