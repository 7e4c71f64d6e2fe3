
local function record_request(key, eta_key, by, has_reason, reason, rc, ttl, asked)
  local had = redis.call('HMGET', key, 'outcome', 'grace', 'at', 'reason')
  local outcome, at, stored = had[1], tonumber(had[3]), had[4]
  local grace = asked
  local before = tonumber(had[2] or grace)
  if before < grace then grace = before end
  local fields = {'rc', rc, 'grace', grace}
  if not at and redis.call('EXISTS', key) == 0 then
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
