
local function live_holders(index, workers, tasks_prefix, tid, wids, heard, leases)
  local live, entry, receivers = {}, false, 0
  for _, wid in ipairs(wids) do
    local lease = leases[wid]
    if lease == nil then
      lease = redis.call('ZSCORE', workers, wid)
      leases[wid] = lease
    end
    -- A holder is alive if its lease is current or it listens on its channel (a worker whose
    -- event loop stalled past its lease still holds the task, and will hear this).
    if heard[wid] > 0 or (lease and tonumber(lease) >= now) then
      live[#live + 1] = wid
      receivers = receivers + heard[wid]
      if not entry then entry = redis.call('HGET', tasks_prefix .. wid, tid) end
    elseif not lease then
      holders_remove(index, tid, wid)  -- its worker is gone: an index entry it left behind
    end
  end
  local holders = false
  if #live > 0 then holders = table.concat(live, ' ') end
  return holders, entry, receivers
end
