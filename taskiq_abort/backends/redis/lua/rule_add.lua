local ttl, by = tonumber(ARGV[1]), ARGV[2]
for k = 2, #KEYS do
  local i = 3 + (k - 2) * 5  -- rule_id, reason, has_name, name, labels
  local fields = {'at', now, 'by', by, 'reason', ARGV[i + 1], 'ttl', ttl, 'labels', ARGV[i + 4]}
  if ARGV[i + 2] == '1' then fields[#fields + 1] = 'name'; fields[#fields + 1] = ARGV[i + 3] end
  redis.call('DEL', KEYS[k])
  redis.call('HSET', KEYS[k], unpack(fields))
  redis.call('PEXPIRE', KEYS[k], ttl)
  redis.call('SADD', KEYS[1], ARGV[i])
end
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return now
