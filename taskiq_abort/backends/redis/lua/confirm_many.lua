
local req, wid = ARGV[1], ARGV[2]
local i = 4
for _ = 1, tonumber(ARGV[3]) do
  record_outcome(req .. ARGV[i], ARGV[i + 1], wid, ARGV[i + 2])
  i = i + 3
end
while i < #ARGV do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
