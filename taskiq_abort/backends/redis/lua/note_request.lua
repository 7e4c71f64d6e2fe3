
local function note_request(list, req, tid)
  local r = redis.call('HMGET', req .. tid, 'at', 'reason', 'rc', 'grace', 'outcome')
  if not r[1] or r[5] == 'finished' then return false end
  list[#list + 1] = tid
  list[#list + 1] = r[2] and 1 or 0
  list[#list + 1] = r[2] or ''
  list[#list + 1] = r[3] or ''
  list[#list + 1] = r[1]
  list[#list + 1] = r[4] or '0'
  return true
end
