
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if KEYS[3] then
  local epoch = replication_id()
  for _, wid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')) do
    local registered = redis.call('HGET', ARGV[3] .. wid, 'epoch')
    if registered and registered ~= epoch then return {wid} end
  end
end
if redis.call('HSETNX', KEYS[1], 'outcome', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'worker', '')  -- revoked by the aborter: no worker confirmed it
end
redis.call('PEXPIRE', KEYS[1], request_life(tonumber(ARGV[2]), KEYS[2]))
return redis.call('HGET', KEYS[1], 'outcome')
