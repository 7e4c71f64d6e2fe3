
local function record_outcome(key, outcome, wid, forced)
  if outcome ~= 'unknown' and redis.call('EXISTS', key) == 1 then
    if redis.call('HSETNX', key, 'outcome', outcome) == 1 then
      redis.call('HSET', key, 'worker', wid)
      if forced == '1' then redis.call('HSET', key, 'forced', '1') end
      if outcome == 'finished' and redis.call('PTTL', key) > 300000 then
        redis.call('PEXPIRE', key, 300000)  -- moot: kept 5 minutes, to answer late askers
      end
    end
  end
end
