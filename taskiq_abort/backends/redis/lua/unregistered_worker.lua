
-- A live worker (lease not lapsed in the zset KEYS_workers) whose `epoch` is another master's:
-- it has not registered with this one since a failover, and may run tasks unregistered here.
local function unregistered_worker(workers, now, worker_prefix)
  local epoch = replication_id()
  for _, wid in ipairs(redis.call('ZRANGEBYSCORE', workers, now, '+inf')) do
    local registered = redis.call('HGET', worker_prefix .. wid, 'epoch')
    if registered and registered ~= epoch then return wid end
  end
  return nil
end
