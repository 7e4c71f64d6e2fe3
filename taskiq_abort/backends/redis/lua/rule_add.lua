local ttl, prefix = tonumber(ARGV[1]), ARGV[2]
local expires = now + ttl
for k = 2, #KEYS do
  local i = 3 + (k - 2) * 6  -- rule_id, requested_by, reason, has_name, name, labels
  local fields = {'at', now, 'by', ARGV[i + 1], 'reason', ARGV[i + 2], 'ttl', ttl,
                  'labels', ARGV[i + 5]}
  if ARGV[i + 3] == '1' then fields[#fields + 1] = 'name'; fields[#fields + 1] = ARGV[i + 4] end
  redis.call('DEL', KEYS[k])
  redis.call('HSET', KEYS[k], unpack(fields))
  redis.call('PEXPIRE', KEYS[k], ttl)
  redis.call('ZADD', KEYS[1], expires, ARGV[i])
  local ix = rule_index(prefix, first_pair(ARGV[i + 5]))
  redis.call('ZREMRANGEBYSCORE', ix, '-inf', now)  -- the expired ones go as new ones come
  redis.call('ZADD', ix, expires, ARGV[i])
  if redis.call('PTTL', ix) < ttl then redis.call('PEXPIRE', ix, ttl) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return now
