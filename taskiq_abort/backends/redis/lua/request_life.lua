
local function request_life(ttl, eta_key)
  local eta = redis.call('PTTL', eta_key)
  if eta > ttl then return eta end
  return ttl
end
