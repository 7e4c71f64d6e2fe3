
local lease = tonumber(ARGV[1])
local req, wid, rule_prefix = ARGV[2], ARGV[3], ARGV[4]
local i = 5
local nstart = tonumber(ARGV[i]); i = i + 1
local aborted, expired = {}, {}
local now = nil
local cache = {}
for _ = 1, nstart do
  local tid, value, deadline = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local nl = tonumber(ARGV[i + 3]); i = i + 4
  local rule = nil
  if nl > 0 then  -- only a start with indexed labels can match a rule
    local labels = {}
    for _ = 1, nl do labels[ARGV[i]] = true; i = i + 1 end
    local rules = rule_candidates(KEYS[4], rule_prefix, labels, cache)
    if #rules > 0 then rule = rule_matching(rules, string.match(value, '^%S+ %S+ (.*)$'), labels) end
  end
  if note_request(aborted, req, tid) then
    if redis.call('HSETNX', req .. tid, 'outcome', 'revoked') == 1 then
      redis.call('HSET', req .. tid, 'worker', wid)  -- who refused it
    end
  elseif rule then
    refuse_by_rule(aborted, req, tid, wid, rule)
  else
    if deadline ~= '' and not now then
      local t = redis.call('TIME')  -- only for a start with a deadline
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
    if deadline ~= '' and now > tonumber(deadline) then
      expired[#expired + 1] = tid
      expired[#expired + 1] = now - tonumber(deadline)
    else
      redis.call('HSET', KEYS[2], tid, value)
      holders_add(KEYS[3], tid, wid)
    end
  end
end
local nfin = tonumber(ARGV[i]); i = i + 1
for _ = 1, nfin do
  local tid, run = ARGV[i], ARGV[i + 1]; i = i + 2
  local cur = redis.call('HGET', KEYS[2], tid)
  if cur and string.sub(cur, 1, #run + 1) == run .. ' ' then
    redis.call('HDEL', KEYS[2], tid)
    holders_remove(KEYS[3], tid, wid)
  end
end
if nstart > 0 then redis.call('PEXPIRE', KEYS[2], 3 * lease) end
return {redis.call('EXISTS', KEYS[1]), aborted, expired}
