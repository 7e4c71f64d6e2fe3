
-- The index zset of the rules whose first label pair is `pair` (RULE_ADD puts a rule under
-- the first pair of its `labels`; a start check reads the zsets of its own pairs).
local function rule_index(prefix, pair)
  return prefix .. 'ix:' .. pair
end
local function first_pair(labels)
  return string.match(labels, '^[^&]*')
end
