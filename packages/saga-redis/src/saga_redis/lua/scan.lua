-- scan: the recoverable sagas of one shard, oldest update first; claims them in mode 'claim'.
--
-- Reply: {'ok', id, fields, id, fields, ...}: the recoverable records (claimed in mode
-- 'claim'), then the members whose record the script cannot read, each with a string in place
-- of its fields: its key's Redis type ('hash' for a hash without a valid head). Those are
-- neither claimed nor counted against the limit, so that one damaged record never fails or
-- fills a scan; the client reports them. The record keys are record_stem followed by the id:
-- they share the shard's hash slot, so this stays a single-slot script on a cluster.
-- A member is recoverable when its record is live, not parked, and unleased or its lease
-- (read from the record) has expired; records that are gone or finished are dropped from the
-- index, parked ones moved to the parked index (in mode 'claim').
local updated = KEYS[1]
local meta = KEYS[2]
local parked = KEYS[3]
local mode = ARGV[1]  -- 'claim' or 'list'
local limit = ARGV[2]
local record_stem = ARGV[3]
local owner = ARGV[4]
local lease_us = ARGV[5]
local token = ARGV[6]
local shards = ARGV[7]
local layout_version = ARGV[8]
local only_at = 9  -- ARGV[9..]: the only saga ids to consider (none: the whole index)

local claim = mode == 'claim'
limit = tonumber(limit)
local fresh, err = layout(meta, shards, layout_version)
err = err or expect(updated, 'ZCARD')
if err then
  return err
end
local now = now_us()
-- Every member looked at is checked before anything is written.
local chosen, stale, misfiled, unreadable = {}, {}, {}, {}
-- Unreadable records reported per call at most: the reply stays bounded by the request.
local report = math.max(limit, 100)
local function consider(id)
  local h, bad = head(record_stem .. id)
  if bad then
    local why = bad[1]
    if why == 'missing' then
      stale[#stale + 1] = id  -- deleted by hand, or expired
    elseif why == 'corrupt' or why == 'type' then
      if #unreadable < report then
        unreadable[#unreadable + 1] = {id, bad[3] or 'hash'}
      end
    else
      return bad  -- an error reply (OOM, ...): the call fails as it is
    end
  elseif h.parked then
    misfiled[#misfiled + 1] = {id, h.updated}  -- parked: belongs in the parked index
  elseif not h.live then
    stale[#stale + 1] = id  -- finished: not recoverable
  elseif h.owner == '' or not h.expires or h.expires <= now then
    chosen[#chosen + 1] = {id, h}
  end
  return nil
end
if #ARGV >= only_at then
  for i = only_at, #ARGV do
    if #chosen >= limit then
      break
    end
    if redis.call('ZSCORE', updated, ARGV[i]) then
      err = consider(ARGV[i])
      if err then
        return err
      end
    end
  end
else
  local start, batch = 0, math.max(limit, 100)
  while #chosen < limit do
    local ids = redis.call('ZRANGE', updated, start, start + batch - 1)
    if #ids == 0 then
      break
    end
    for _, id in ipairs(ids) do
      err = consider(id)
      if err then
        return err
      end
      if #chosen >= limit then
        break
      end
    end
    start = start + batch
  end
end
if claim and #misfiled > 0 then
  err = expect(parked, 'ZCARD')
  if err then
    return err
  end
end
if fresh then
  redis.call('HSET', meta, 'shards', shards, 'layout', layout_version)
end
local reply = {'ok'}
for _, pair in ipairs(chosen) do
  local id, h = pair[1], pair[2]
  if claim then
    take(record_stem .. id, updated, id, h, owner, lease_us, token, now)
  end
  reply[#reply + 1] = id
  reply[#reply + 1] = redis.call('HGETALL', record_stem .. id)
end
for _, pair in ipairs(unreadable) do
  reply[#reply + 1] = pair[1]
  reply[#reply + 1] = pair[2]
end
if claim then
  for _, id in ipairs(stale) do
    redis.call('ZREM', updated, id)
  end
  for _, pair in ipairs(misfiled) do
    redis.call('ZREM', updated, pair[1])
    redis.call('ZADD', parked, int(pair[2]), pair[1])
  end
end
return reply
