-- checkpoint: compare-and-set one saga's state on its version, append its journal entries,
-- and move it between the indexes (a terminal status also starts its retention time).
-- Reply: 0, or a failure reply.
--
-- The most frequent script, so written out in full: what head(), head_text() and
-- append_journal() do elsewhere is inlined here (each call of a helper costs).
local record = KEYS[1]
local journal = KEYS[2]
local updated = KEYS[3]
local parked = KEYS[4]
local finished = KEYS[5]
local saga_id = ARGV[1]
local retention_ms = ARGV[2]  -- '' keeps finished sagas
local journal_cap = ARGV[3]  -- '' keeps every entry
local owner = ARGV[4]  -- '' releases the lease
local lease_us = ARGV[5]
local expected_version = ARGV[6]
local status = ARGV[7]
local body = ARGV[8]
local token = ARGV[9]
local has_error = ARGV[10]  -- '1' stores error_text, '0' clears the error
local error_text = ARGV[11]
local entries_at = 12  -- ARGV[12..]: the journal entries

local text = redis.pcall('HGET', record, 'head')
if type(text) == 'table' then
  return refused(text, record)
end
local version, stored_status, stored_updated, expires, attempts, flags, stored_token
if text then
  version, stored_status, stored_updated, expires, attempts, flags, stored_token =
    string.match(text, HEAD_PATTERN)
end
local live = stored_status == 'running' or stored_status == 'compensating'
  or stored_status == 'failed'
if not (live or stored_status == 'completed' or stored_status == 'compensated') then
  if redis.call('EXISTS', record) == 0 then
    return {'missing'}
  end
  return {'corrupt', record}
end
if stored_token == token then
  return 0  -- this very write, retried by the client after a lost reply
end
if not live then
  return {'finished', stored_status}
end
-- Versions are written in one canonical form (int() here, str(int) by the client).
if version ~= expected_version then
  return {'conflict', version}
end
local terminal = status == 'completed' or status == 'compensated'
local is_parked = flags == '1' or flags == '3'
local last = #ARGV
local entries = last >= entries_at
-- Keys the script does not write first are checked before the first write; the journal is
-- checked by its append when there are entries to append (see below).
local err = (not entries and expect(journal, 'LLEN')) or (terminal and expect(finished, 'ZCARD'))
if err then
  return err
end
local t = redis.call('TIME')
local now = math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]), tonumber(stored_updated) + 1)
local stamp = int(now)
-- The first write: the saga's index entry (a parked saga's is in the parked index), which
-- fails on an index of another type before anything is written.
local index = updated
if is_parked then
  index = parked
end
local done
if terminal and not is_parked then
  done = redis.pcall('ZREM', index, saga_id)
else
  done = redis.pcall('ZADD', index, stamp, saga_id)
end
if type(done) == 'table' then
  return refused(done, index)
end
if entries then
  -- As append_journal(). A journal of another type fails the first RPUSH, which writes
  -- nothing; the index entry is then put back as it was (its score is the stored update
  -- time, as every script writes both together).
  local length = redis.pcall('RPUSH', journal,
                             unpack(ARGV, entries_at, math.min(entries_at + 999, last)))
  if type(length) == 'table' then
    redis.call('ZADD', index, stored_updated, saga_id)
    return refused(length, journal)
  end
  for i = entries_at + 1000, last, 1000 do
    length = redis.call('RPUSH', journal, unpack(ARGV, i, math.min(i + 999, last)))
  end
  if journal_cap ~= '' and length > tonumber(journal_cap) then
    redis.call('LTRIM', journal, -tonumber(journal_cap), -1)
  end
end
-- As head_text(): the lease is released by a terminal status or an empty owner.
local new_owner, until_text = owner, ''
if terminal or new_owner == '' then
  new_owner = ''
else
  until_text = int(now + tonumber(lease_us))
end
local new_flags = 0
if is_parked then
  new_flags = 1
end
local new_head
if has_error == '1' then
  new_head = int(tonumber(version) + 1) .. ' ' .. status .. ' ' .. stamp .. ' ' .. until_text
    .. ' ' .. attempts .. ' ' .. (new_flags + 2) .. ' ' .. token .. ' ' .. new_owner
  redis.call('HSET', record, 'head', new_head, 'body', body, 'error', error_text)
else
  new_head = int(tonumber(version) + 1) .. ' ' .. status .. ' ' .. stamp .. ' ' .. until_text
    .. ' ' .. attempts .. ' ' .. new_flags .. ' ' .. token .. ' ' .. new_owner
  redis.call('HSET', record, 'head', new_head, 'body', body)
  if flags == '2' or flags == '3' then
    redis.call('HDEL', record, 'error')
  end
end
if terminal then
  redis.call('ZADD', finished, stamp, saga_id)
  if retention_ms ~= '' then
    redis.call('PEXPIRE', record, retention_ms)
    redis.call('PEXPIRE', journal, retention_ms)
    redis.call('PEXPIRE', finished, retention_ms)
    -- Entries of sagas finished longer ago than the retention time (their records are gone),
    -- dropped at about one finish in ten (a stamp ending in 0): the index stays bounded
    -- without a scan of it on every finish.
    if string.byte(stamp, -1) == 48 then
      redis.call('ZREMRANGEBYSCORE', finished, '-inf',
                 '(' .. int(now - tonumber(retention_ms) * 1000))
    end
  end
end
return 0
