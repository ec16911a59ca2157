-- checkpoint: compare-and-set one saga's state on its version, append its journal entries,
-- and move it between the indexes (a terminal status also starts its retention time; a
-- WAITING one rests in due and waiting). With a cancel requested, a write that moves the saga
-- forward is refused; a signal is consumed, or a pending one refuses the write, when asked.
-- Reply: 0, or a failure reply.
--
-- The most frequent script, so written out in full: what head(), head_text() and
-- append_journal() do elsewhere is inlined on the path of a checkpoint that neither waits nor
-- touches signals (each call of a helper costs).
local record = KEYS[1]
local journal = KEYS[2]
local updated = KEYS[3]
local parked = KEYS[4]
local finished = KEYS[5]
local signals = KEYS[6]
local due = KEYS[7]
local waiting = KEYS[8]
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
local wake_us = ARGV[12]  -- WAITING: when it is due, '' for none
local waiting_for = ARGV[13]  -- WAITING: the signal name as a JSON string, '' for none
local consume = ARGV[14]  -- the id of a pending signal to consume, '' for none
local unless = ARGV[15]  -- refuse if a signal of this name (a JSON string) is pending, '' none
local entries_at = 16  -- ARGV[16..]: the journal entries

local text = redis.pcall('HGET', record, 'head')
if type(text) == 'table' then
  return refused(text, record)
end
local version, stored_status, stored_updated, expires, attempts, flags, stored_token,
  stored_owner
if text then
  version, stored_status, stored_updated, expires, attempts, flags, stored_token, stored_owner =
    string.match(text, HEAD_PATTERN)
end
local live = stored_status == 'running' or stored_status == 'compensating'
  or stored_status == 'failed' or stored_status == 'waiting'
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
flags = tonumber(flags)
local is_parked = flags % 2 == 1
local cancelled = flags >= 4
local was_waiting = stored_status == 'waiting'
local to_waiting = status == 'waiting'
if cancelled then
  -- Moving forward: finishing, suspending, or a greater cursor (the body's first line).
  local forward = status == 'completed' or (to_waiting and not was_waiting)
  if not forward then
    local stored_body = redis.call('HGET', record, 'body') or ''
    local stored_cursor = tonumber(string.match(stored_body, '^(%d+)\n') or '-1')
    forward = tonumber(string.match(body, '^(%d+)\n') or '0') > stored_cursor
  end
  if forward then
    return {'cancelled', redis.call('HGET', record, 'cancel') or ''}
  end
end
local pending = nil  -- names of the pending signals, read when a condition needs them
if unless ~= '' or (to_waiting and waiting_for ~= '') then
  local err
  pending, err = pending_names(signals)
  if err then
    return err
  end
  if unless ~= '' and pending[unless] then
    return {'signalpending', unless}
  end
end
if consume ~= '' then
  local found = redis.pcall('HGET', signals, consume)
  if type(found) == 'table' then
    return refused(found, signals)
  end
  if not found or found == '' then
    return {'unconsumable', consume}
  end
end
local last = #ARGV
local entries = last >= entries_at
-- Where the saga's index entry is and goes: a parked saga's stays in parked; a WAITING
-- saga's is in due and waiting; any other's in updated (none once finished).
local was_in_due = was_waiting and not is_parked
local to_in_due = to_waiting and not is_parked
-- Keys the script does not write first are checked before the first write; on the common
-- path the journal is checked by its append when there are entries to append (see below).
local err = (not entries and expect(journal, 'LLEN')) or (terminal and expect(finished, 'ZCARD'))
if not err and (was_in_due or to_in_due) then
  err = (entries and expect(journal, 'LLEN')) or expect(updated, 'ZCARD')
    or expect(due, 'ZCARD') or expect(waiting, 'ZCARD')
end
if err then
  return err
end
local t = redis.call('TIME')
local now = math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]), tonumber(stored_updated) + 1)
local stamp = int(now)
-- WAITING: the wake time stored, brought forward to now when a cancel is requested or the
-- signal it waits for is pending already.
local wake_text = wake_us
if to_waiting and (cancelled or (waiting_for ~= '' and pending[waiting_for])) then
  if wake_text == '' or tonumber(wake_text) > now then
    wake_text = stamp
  end
end
if was_in_due or to_in_due then
  -- Every key was checked above: nothing below fails.
  if was_in_due then
    redis.call('ZREM', due, saga_id)
    redis.call('ZREM', waiting, saga_id)
  else
    redis.call('ZREM', updated, saga_id)
  end
  if to_in_due then
    local score = wake_text
    if score == '' then
      score = '+inf'
    end
    redis.call('ZADD', due, score, saga_id)
    redis.call('ZADD', waiting, stamp, saga_id)
  elseif not terminal then
    redis.call('ZADD', updated, stamp, saga_id)
  end
  if entries then
    append_journal(journal, entries_at, journal_cap)
  end
else
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
end
if consume ~= '' then
  redis.call('HSET', signals, consume, '')  -- consumed: its id stays known as delivered
end
-- As head_text(): the lease is released by a terminal or WAITING status or an empty owner.
local new_owner, until_text = owner, ''
if terminal or to_waiting or new_owner == '' then
  new_owner = ''
else
  until_text = int(now + tonumber(lease_us))
end
local new_flags = flags - flags % 4 + flags % 2  -- parked and cancel kept, error set below
if to_waiting then
  attempts = '0'  -- the saga made progress: its resumes are not failed attempts
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
  if flags % 4 >= 2 then
    redis.call('HDEL', record, 'error')
  end
end
if to_waiting then
  redis.call('HSET', record, 'wait', wake_text .. ' ' .. waiting_for)
elseif was_waiting then
  redis.call('HDEL', record, 'wait')
end
if terminal then
  redis.call('ZADD', finished, stamp, saga_id)
  if retention_ms ~= '' then
    redis.call('PEXPIRE', record, retention_ms)
    redis.call('PEXPIRE', journal, retention_ms)
    redis.call('PEXPIRE', signals, retention_ms)
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
