
local function record_request(key, eta_key, by, has_reason, reason, rc, ttl, asked)
  if redis.call('EXISTS', key) == 0 then
    redis.call('HSET', key, 'at', now, 'by', by)
    if has_reason == '1' then redis.call('HSET', key, 'reason', reason) end
  end
  local grace = asked
  local before = tonumber(redis.call('HGET', key, 'grace') or grace)
  if before < grace then grace = before end
  redis.call('HSET', key, 'rc', rc, 'grace', grace)
  local life = request_life(ttl, eta_key)
  if grace + ttl > life then life = grace + ttl end
  redis.call('PEXPIRE', key, life)
  return grace, redis.call('HGET', key, 'reason'), tonumber(redis.call('HGET', key, 'at'))
end
