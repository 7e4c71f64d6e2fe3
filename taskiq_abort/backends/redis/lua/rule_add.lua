
local ttl = tonumber(ARGV[2])
local fields = {'at', now, 'by', ARGV[3], 'reason', ARGV[4], 'ttl', ttl, 'labels', ARGV[7]}
if ARGV[5] == '1' then fields[#fields + 1] = 'name'; fields[#fields + 1] = ARGV[6] end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SADD', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
return now
