local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '+inf')) do
  local flat = redis.call('HGETALL', ARGV[1] .. id)
  if #flat > 0 then out[#out + 1] = {id, flat} else redis.call('ZREM', KEYS[1], id) end
end
return out
