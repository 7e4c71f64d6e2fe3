
local out = {}
for _, wid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  local info = redis.call('HGETALL', ARGV[1] .. wid)
  out[#out + 1] = {wid, info, redis.call('HGETALL', ARGV[2] .. wid)}
end
return out
