
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if KEYS[2] then
  local wid = unregistered_worker(KEYS[2], now, ARGV[1])
  if wid then return {wid} end
end
redis.call('HSET', KEYS[1], 'revoking', '1')
return 1
