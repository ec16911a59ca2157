-- create: store a new RUNNING saga at version 1, leased to its creator, with its first
-- journal entries. Reply: 0, or a failure reply.
local record = KEYS[1]
local journal = KEYS[2]
local updated = KEYS[3]
local meta = KEYS[4]
local saga_id = ARGV[1]
local saga_name = ARGV[2]
local saga_version = ARGV[3]
local body = ARGV[4]
local owner = ARGV[5]
local lease_us = ARGV[6]
local token = ARGV[7]
local journal_cap = ARGV[8]
local shards = ARGV[9]
local layout_version = ARGV[10]
local entries_at = 11  -- ARGV[11..]: the journal entries

local fresh, err = layout(meta, shards, layout_version)
if err then
  return err
end
-- One look at both of the saga's keys; only when one exists is it worth knowing which.
if redis.call('EXISTS', record, journal) > 0 then
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
  found = kind(journal)
  if found == 'list' then
    return {'orphan', journal}
  end
  return {'type', journal, found}
end
local now = now_us()
local stamp = int(now)
-- The first write, in place of a type check: a recovery index of another type fails it
-- before anything is written.
local added = redis.pcall('ZADD', updated, stamp, saga_id)
if type(added) == 'table' then
  return refused(added, updated)
end
if fresh then
  redis.call('HSET', meta, 'shards', shards, 'layout', layout_version)
end
redis.call('HSET', record, 'name', saga_name, 'saga_version', saga_version, 'created', stamp,
           'body', body, 'head',
           '1 running ' .. stamp .. ' ' .. int(now + tonumber(lease_us)) .. ' 0 0 '
           .. token .. ' ' .. owner)
if #ARGV >= entries_at then
  append_journal(journal, entries_at, journal_cap)  -- the journal does not exist: cannot fail
end
return 0
