-- scan: the recoverable sagas of one shard, earliest due first; claims them in mode 'claim'.
--
-- Reply: {'ok', id, fields, id, fields, ...}: the recoverable records (claimed in mode
-- 'claim'), then the members whose record the script cannot read, each with a string in place
-- of its fields: its key's Redis type ('hash' for a hash without a valid head). Those are
-- neither claimed nor counted against the limit, so that one damaged record never fails or
-- fills a scan; the client reports them. The record keys are record_stem followed by the id
-- (signals_stem for their signals): they share the shard's hash slot, so this stays a
-- single-slot script on a cluster.
--
-- Two indexes hold the candidates, and a member of either is recoverable when its record is
-- live, not parked, and unleased or its lease (read from the record) has expired. updated:
-- RUNNING, COMPENSATING and FAILED sagas, due at their update time. due: WAITING sagas by
-- wake time, only those due by now read (a claimed one stays there at its wake time, so an
-- abandoned claim keeps its place). The earliest due of both come first (ties by creation
-- time). Records that are gone or finished are dropped from the indexes, parked ones moved to
-- the parked index, and members in the wrong one of the two moved to the other (in mode
-- 'claim').
local updated = KEYS[1]
local meta = KEYS[2]
local parked = KEYS[3]
local due = KEYS[4]
local waiting = KEYS[5]
local mode = ARGV[1]  -- 'claim' or 'list'
local limit = ARGV[2]
local record_stem = ARGV[3]
local signals_stem = ARGV[4]
local owner = ARGV[5]
local lease_us = ARGV[6]
local token = ARGV[7]
local shards = ARGV[8]
local layout_version = ARGV[9]
local only_at = 10  -- ARGV[10..]: the only saga ids to consider (none: the whole indexes)

local claim = mode == 'claim'
limit = tonumber(limit)
local fresh, err = layout(meta, shards, layout_version)
err = err or expect(updated, 'ZCARD') or expect(due, 'ZCARD') or expect(waiting, 'ZCARD')
if err then
  return err
end
local now = now_us()
-- Every member looked at is checked before anything is written. chosen: {id, head, due at,
-- from due}; stale: {id, index}; misfiled (parked): {id, update time, from due};
-- misplaced (in the wrong one of updated and due): {id, head, from due}.
local chosen, stale, misfiled, misplaced, unreadable = {}, {}, {}, {}, {}
local from_updated, from_due = 0, 0
-- Unreadable records reported per call at most: the reply stays bounded by the request.
local report = math.max(limit, 100)
local function consider(id, in_due, score)
  local record = record_stem .. id
  local h, bad = head(record)
  if bad then
    local why = bad[1]
    if why == 'missing' then
      stale[#stale + 1] = {id, in_due}  -- deleted by hand, or expired
    elseif why == 'corrupt' or why == 'type' then
      if #unreadable < report then
        unreadable[#unreadable + 1] = {id, bad[3] or 'hash'}
      end
    else
      return bad  -- an error reply (OOM, ...): the call fails as it is
    end
  elseif h.parked then
    misfiled[#misfiled + 1] = {id, h.updated, in_due}  -- belongs in the parked index
  elseif not h.live then
    stale[#stale + 1] = {id, in_due}  -- finished: not recoverable
  elseif (h.status == 'waiting') ~= in_due then
    misplaced[#misplaced + 1] = {id, h, in_due}
  elseif h.owner == '' or not h.expires or h.expires <= now then
    if in_due then
      chosen[#chosen + 1] = {id, h, score, true}
      from_due = from_due + 1
    else
      chosen[#chosen + 1] = {id, h, h.updated, false}
      from_updated = from_updated + 1
    end
  end
  return nil
end
if #ARGV >= only_at then
  for i = only_at, #ARGV do
    if #chosen >= limit then
      break
    end
    local id = ARGV[i]
    if redis.call('ZSCORE', updated, id) then
      err = consider(id, false)
    else
      local score = tonumber(redis.call('ZSCORE', due, id))
      if score and score <= now then
        err = consider(id, true, score)
      end
    end
    if err then
      return err
    end
  end
else
  local batch = math.max(limit, 100)
  local start = 0
  while from_updated < limit do
    local ids = redis.call('ZRANGE', updated, start, start + batch - 1)
    if #ids == 0 then
      break
    end
    for _, id in ipairs(ids) do
      err = consider(id, false)
      if err then
        return err
      end
      if from_updated >= limit then
        break
      end
    end
    start = start + batch
  end
  -- The due ones, and past the limit those due at the same instant as the last one taken, so
  -- that ties are settled by creation time below.
  start = 0
  local last_score = nil
  local full = false
  while not full do
    local page = redis.call('ZRANGEBYSCORE', due, '-inf', now, 'WITHSCORES', 'LIMIT', start,
                            batch)
    if #page == 0 then
      break
    end
    for i = 1, #page, 2 do
      local score = tonumber(page[i + 1])
      if from_due >= limit and score ~= last_score then
        full = true
        break
      end
      err = consider(page[i], true, score)
      if err then
        return err
      end
      last_score = score
    end
    start = start + batch
  end
end
-- Earliest due first; ties by creation time, then id.
for _, entry in ipairs(chosen) do
  entry[5] = tonumber(redis.call('HGET', record_stem .. entry[1], 'created')) or 0
end
table.sort(chosen, function(a, b)
  if a[3] ~= b[3] then
    return a[3] < b[3]
  end
  if a[5] ~= b[5] then
    return a[5] < b[5]
  end
  return a[1] < b[1]
end)
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
for index = 1, math.min(limit, #chosen) do
  local id, h, _, in_due = unpack(chosen[index])
  if claim then
    take(record_stem .. id, in_due and waiting or updated, id, h, owner, lease_us, token, now)
  end
  reply[#reply + 1] = id
  reply[#reply + 1] = record_fields(record_stem .. id, signals_stem .. id)
end
for _, pair in ipairs(unreadable) do
  reply[#reply + 1] = pair[1]
  reply[#reply + 1] = pair[2]
end
if claim then
  local function leave(id, in_due)
    if in_due then
      redis.call('ZREM', due, id)
      redis.call('ZREM', waiting, id)
    else
      redis.call('ZREM', updated, id)
    end
  end
  for _, pair in ipairs(stale) do
    leave(pair[1], pair[2])
  end
  for _, entry in ipairs(misfiled) do
    leave(entry[1], entry[3])
    redis.call('ZADD', parked, int(entry[2]), entry[1])
  end
  for _, entry in ipairs(misplaced) do
    local id, h, in_due = entry[1], entry[2], entry[3]
    leave(id, in_due)
    if in_due then
      redis.call('ZADD', updated, int(h.updated), id)
    else
      local wake = wait_of(record_stem .. id)
      redis.call('ZADD', due, wake and int(wake) or '+inf', id)
      redis.call('ZADD', waiting, int(h.updated), id)
    end
  end
end
return reply
