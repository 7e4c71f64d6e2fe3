
local lease = tonumber(ARGV[1])
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 16)) do
  local listening = redis.call('PUBSUB', 'NUMSUB', ARGV[5] .. dead)[2]
  if dead ~= ARGV[2] and tonumber(listening) == 0 then
    drop_worker(KEYS[4], KEYS[3], ARGV[3] .. dead, ARGV[4] .. dead, dead)
  end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[6] == '1' and redis.call('HGET', KEYS[1], 'epoch') ~= replication_id() then return 0 end
redis.call('PEXPIRE', KEYS[1], lease)
redis.call('PEXPIRE', KEYS[2], 3 * lease)
redis.call('ZADD', KEYS[3], now + lease, ARGV[2])
return now
