
local function record_request(key, eta_key, by, has_reason, reason, rc, ttl, asked)
  local flat, had = redis.call('HGETALL', key), {}  -- not HMGET: not in aborters' ACLs
  for i = 1, #flat, 2 do had[flat[i]] = flat[i + 1] end
  local outcome, at, stored = had.outcome or false, tonumber(had.at), had.reason or false
  local grace = asked
  local before = tonumber(had.grace or grace)
  if before < grace then grace = before end
  local fields = {'rc', rc, 'grace', grace}
  if #flat == 0 then  -- no request yet
    at = now
    fields[5], fields[6], fields[7], fields[8] = 'at', at, 'by', by
    if has_reason == '1' then stored, fields[9], fields[10] = reason, 'reason', reason end
  end
  redis.call('HSET', key, unpack(fields))
  local life = request_life(ttl, eta_key)
  if grace + ttl > life then life = grace + ttl end
  redis.call('PEXPIRE', key, life)
  return grace, stored, at, outcome
end
