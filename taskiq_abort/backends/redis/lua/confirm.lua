
record_outcome(KEYS[1], ARGV[1], ARGV[2], ARGV[4])
for i = 5, #ARGV do redis.call('PUBLISH', ARGV[i], ARGV[3]) end
return 1
