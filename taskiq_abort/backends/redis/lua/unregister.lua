
drop_worker(KEYS[4], KEYS[3], KEYS[1], KEYS[2], ARGV[1])
return 1
