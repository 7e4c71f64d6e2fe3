
local function live_holders(index, workers, tid, wids, heard, leases)
  local live, receivers = {}, 0
  for _, wid in ipairs(wids) do
    -- A holder is alive if it listens on its channel or its lease is current (a worker whose
    -- event loop stalled past its lease still holds the task, and will hear this).
    local alive, lease = heard[wid] > 0, nil
    if not alive then
      lease = leases[wid]
      if lease == nil then
        lease = redis.call('ZSCORE', workers, wid)
        leases[wid] = lease
      end
      alive = lease and tonumber(lease) >= now
    end
    if alive then
      live[#live + 1] = wid
      receivers = receivers + heard[wid]
    elseif not lease then
      holders_remove(index, tid, wid)  -- its worker is gone: an index entry it left behind
    end
  end
  local holders = false
  if #live > 0 then holders = table.concat(live, ' ') end
  return holders, receivers
end
