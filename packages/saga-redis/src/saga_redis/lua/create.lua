-- create: store a new saga at version 1 with its first journal entries: RUNNING and leased to
-- its creator (in updated), or WAITING without a lease (started detached: in due, at its wake
-- time, and waiting; published on the work channel when it is due by now, so idle workers
-- start it at once). Reply: 0, or a failure reply.
local record = KEYS[1]
local journal = KEYS[2]
local updated = KEYS[3]
local meta = KEYS[4]
local signals = KEYS[5]
local due = KEYS[6]
local waiting = KEYS[7]
local saga_id = ARGV[1]
local saga_name = ARGV[2]
local saga_version = ARGV[3]
local body = ARGV[4]
local owner = ARGV[5]  -- '' for a WAITING saga
local lease_us = ARGV[6]
local token = ARGV[7]
local journal_cap = ARGV[8]
local shards = ARGV[9]
local layout_version = ARGV[10]
local status = ARGV[11]  -- 'running' or 'waiting'
local wake_us = ARGV[12]  -- WAITING: when it is due, '' for a signal or cancel only
local deadline_us = ARGV[13]  -- '' for none
local parent_id = ARGV[14]  -- the parent saga's id, '' for none
local channel = ARGV[15]  -- the work channel: told of a WAITING saga due now
local entries_at = 16  -- ARGV[16..]: the journal entries

local fresh, err = layout(meta, shards, layout_version)
if err then
  return err
end
-- One look at the saga's keys; only when one exists is it worth knowing which.
if redis.call('EXISTS', record, journal, signals) > 0 then
  local found = kind(record)
  if found == 'hash' then
    local h, bad = head(record)
    if bad then
      return bad
    end
    if h.token == token then
      return 0  -- this very create, retried by the client after a lost reply
    end
    return {'exists'}
  elseif found ~= 'none' then
    return {'type', record, found}
  end
  for _, key in ipairs({journal, signals}) do
    found = kind(key)
    if found == 'list' and key == journal or found == 'hash' and key == signals then
      return {'orphan', key}
    elseif found ~= 'none' then
      return {'type', key, found}
    end
  end
end
local now = now_us()
local stamp = int(now)
local waits = status == 'waiting'
-- The first write, in place of a type check: an index of another type fails it before
-- anything is written (the waiting index, written second, is checked first).
local added
if waits then
  err = expect(waiting, 'ZCARD')
  if err then
    return err
  end
  local score = wake_us
  if score == '' then
    score = '+inf'
  end
  added = redis.pcall('ZADD', due, score, saga_id)
else
  added = redis.pcall('ZADD', updated, stamp, saga_id)
end
if type(added) == 'table' then
  return refused(added, waits and due or updated)
end
if fresh then
  redis.call('HSET', meta, 'shards', shards, 'layout', layout_version)
end
local first_head = '1 running ' .. stamp .. ' ' .. int(now + tonumber(lease_us)) .. ' 0 0 '
  .. token .. ' ' .. owner
if waits then
  redis.call('ZADD', waiting, stamp, saga_id)
  first_head = '1 waiting ' .. stamp .. '  0 0 ' .. token .. ' '
  redis.call('HSET', record, 'wait', wake_us .. ' ')
end
redis.call('HSET', record, 'name', saga_name, 'saga_version', saga_version, 'created', stamp,
           'body', body, 'head', first_head)
if deadline_us ~= '' then
  redis.call('HSET', record, 'deadline', deadline_us)
end
if parent_id ~= '' then
  redis.call('HSET', record, 'parent', parent_id)
end
if #ARGV >= entries_at then
  append_journal(journal, entries_at, journal_cap)  -- the journal does not exist: cannot fail
end
if waits and wake_us ~= '' and tonumber(wake_us) <= now then
  redis.call('PUBLISH', channel, saga_id)
end
return 0
