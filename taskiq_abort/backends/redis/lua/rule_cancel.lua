local labels = redis.call('HGET', KEYS[2], 'labels')
if labels then redis.call('ZREM', rule_index(ARGV[2], first_pair(labels)), ARGV[1]) end
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[2])
