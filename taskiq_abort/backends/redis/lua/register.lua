
local lease = tonumber(ARGV[1])
local wid, req = ARGV[2], ARGV[3]
local i = 4
local ninfo = tonumber(ARGV[i]); i = i + 1
drop_worker(KEYS[4], KEYS[3], KEYS[1], KEYS[2], wid)
for _ = 1, ninfo do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]); i = i + 2
end
local ntasks = tonumber(ARGV[i]); i = i + 1
local aborted = {}
local cache = {}
for _ = 1, ntasks do
  local tid, value = ARGV[i], ARGV[i + 1]; i = i + 2
  redis.call('HSET', KEYS[2], tid, value)
  holders_add(KEYS[4], tid, wid)
  if not note_request(aborted, req, tid) then
    local name, labels, labelled = entry_match(value)
    if labelled then  -- a rule recorded while this worker was away applies to it too
      local rules = rule_candidates(KEYS[5], ARGV[#ARGV], labels, cache)
      local rule = rule_matching(rules, name, labels)
      if rule then request_by_rule(aborted, req, tid, rule) end
    end
  end
end
if ARGV[i] == '1' then redis.call('HSET', KEYS[1], 'epoch', replication_id()) end
redis.call('PEXPIRE', KEYS[1], lease)
if ntasks > 0 then redis.call('PEXPIRE', KEYS[2], 3 * lease) end
redis.call('ZADD', KEYS[3], now + lease, wid)
return aborted
