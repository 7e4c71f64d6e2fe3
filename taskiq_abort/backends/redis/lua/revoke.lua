
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if KEYS[3] then
  local wid = unregistered_worker(KEYS[3], now, ARGV[3])
  if wid then return {wid} end
end
if redis.call('HSETNX', KEYS[1], 'outcome', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'worker', '')  -- revoked by the aborter: no worker confirmed it
end
redis.call('PEXPIRE', KEYS[1], request_life(tonumber(ARGV[2]), KEYS[2]))
return redis.call('HGET', KEYS[1], 'outcome')
