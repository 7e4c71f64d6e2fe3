local ttl = tonumber(ARGV[1])
for k = 2, #KEYS do
  local i = 2 + (k - 2) * 6  -- rule_id, requested_by, reason, has_name, name, labels
  local fields = {'at', now, 'by', ARGV[i + 1], 'reason', ARGV[i + 2], 'ttl', ttl,
                  'labels', ARGV[i + 5]}
  if ARGV[i + 3] == '1' then fields[#fields + 1] = 'name'; fields[#fields + 1] = ARGV[i + 4] end
  redis.call('DEL', KEYS[k])
  redis.call('HSET', KEYS[k], unpack(fields))
  redis.call('PEXPIRE', KEYS[k], ttl)
  redis.call('SADD', KEYS[1], ARGV[i])
end
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return now
