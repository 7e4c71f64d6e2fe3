
local function load_rules(set, prefix)
  local rules = {}
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    local flat = redis.call('HGETALL', prefix .. id)
    if #flat == 0 then
      redis.call('SREM', set, id)  -- expired
    else
      local rule = {id = id, pairs = {}}
      for j = 1, #flat, 2 do rule[flat[j]] = flat[j + 1] end
      for pair in string.gmatch(rule.labels or '', '[^&]+') do rule.pairs[#rule.pairs + 1] = pair end
      rules[#rules + 1] = rule
    end
  end
  return rules
end

local function rule_matching(rules, name, labels)
  for _, rule in ipairs(rules) do
    local ok = rule.name == nil or rule.name == name
    if ok then
      for _, pair in ipairs(rule.pairs) do
        if not labels[pair] then ok = false; break end
      end
    end
    if ok then return rule end
  end
  return nil
end

local function refuse_by_rule(list, req, tid, wid, rule)
  local key = req .. tid
  redis.call('DEL', key)  -- none, or one settled 'finished' (moot)
  redis.call('HSET', key, 'at', rule.at, 'by', rule.by, 'reason', rule.reason,
             'outcome', 'revoked', 'worker', wid, 'rule', rule.id)
  redis.call('PEXPIRE', key, tonumber(rule.ttl))
  list[#list + 1] = tid
  list[#list + 1] = 1
  list[#list + 1] = rule.reason
  list[#list + 1] = ''
  list[#list + 1] = rule.at
  list[#list + 1] = '0'
end
