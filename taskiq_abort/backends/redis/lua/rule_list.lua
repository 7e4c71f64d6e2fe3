local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local flat = redis.call('HGETALL', ARGV[1] .. id)
  if #flat > 0 then out[#out + 1] = {id, flat} else redis.call('SREM', KEYS[1], id) end
end
return out
