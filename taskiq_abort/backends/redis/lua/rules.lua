
-- The live rules a start carrying `labels` (a set of label pairs) could fall under: those
-- indexed under one of its pairs (a rule is indexed under its first pair, see RULE_ADD; one
-- without pairs under ''), so the cost follows the start's labels, not the rules in force.
-- `cache` keeps the rules read in one call. An expired rule's id leaves its index and `set`
-- (zsets scored by expiry: RULE_ADD drops the expired ones too).
local function rule_candidates(set, prefix, labels, cache)
  local found, keys = {}, {''}
  for pair in pairs(labels) do keys[#keys + 1] = pair end
  for _, pair in ipairs(keys) do
    local ix = rule_index(prefix, pair)
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', ix, '-inf', '+inf')) do
      local rule = cache[id]
      if rule == nil then
        local flat = redis.call('HGETALL', prefix .. id)
        rule = false
        if #flat == 0 then
          redis.call('ZREM', ix, id)  -- expired
          redis.call('ZREM', set, id)
        else
          rule = {id = id, pairs = {}}
          for j = 1, #flat, 2 do rule[flat[j]] = flat[j + 1] end
          for p in string.gmatch(rule.labels or '', '[^&]+') do rule.pairs[#rule.pairs + 1] = p end
        end
        cache[id] = rule
      end
      if rule then found[#found + 1] = rule end
    end
  end
  return found
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

-- Record a request for `tid` naming the rule (replacing none, or one settled 'finished', which
-- is moot), with the extra fields given, and note it as note_request does.
local function rule_request(list, req, tid, rule, ...)
  local key = req .. tid
  redis.call('DEL', key)
  redis.call('HSET', key, 'at', rule.at, 'by', rule.by, 'reason', rule.reason, 'rule', rule.id, ...)
  redis.call('PEXPIRE', key, tonumber(rule.ttl))
  list[#list + 1] = tid
  list[#list + 1] = 1
  list[#list + 1] = rule.reason
  list[#list + 1] = ''
  list[#list + 1] = rule.at
  list[#list + 1] = '0'
end

-- A start that a rule matches: refused, as a revoked task is.
local function refuse_by_rule(list, req, tid, wid, rule)
  rule_request(list, req, tid, rule, 'outcome', 'revoked', 'worker', wid)
end

-- The labels and name of a registry entry ("<run token> <started> <name>"): the token's third
-- ';'-separated field holds the label pairs.
local function entry_match(value)
  local token, name = string.match(value, '^(%S+) %S+ (.*)$')
  local labels = {}
  local pairs_ = string.match(token or '', '^[^;]*;[^;]*;(.*)$')
  for pair in string.gmatch(pairs_ or '', '[^&]+') do labels[pair] = true end
  return name, labels, pairs_ ~= nil and pairs_ ~= ''
end

-- A held task that a rule matches: a pending request naming the rule (as an abort by id would
-- record), for the worker to abort it.
local function request_by_rule(list, req, tid, rule)
  rule_request(list, req, tid, rule, 'rc', '', 'grace', 0)
end
