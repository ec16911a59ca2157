-- The helpers every script may call, put before each script's own text when it is loaded
-- (saga_redis._lua.script_source). A script defines them anew on every call, so they are few
-- and small.
--
-- A failure reply is a table whose first element names the failure; saga_redis._replies
-- turns it into the core's errors:
--   {'missing'}                      no saga record
--   {'exists'}                       create of an id that is stored already
--   {'finished', status}             the saga is completed or compensated
--   {'conflict', version}            the stored version is not the expected one
--   {'leased', owner, expires_us}    another owner's lease is live
--   {'notowner', owner}              the lease is not the caller's ('' when unleased)
--   {'parked'}                       the saga is in the dead-letter state
--   {'type', key, type}              a key holds a Redis type this storage never writes there
--   {'corrupt', key}                 a record hash has no valid head field
--   {'orphan', key}                  a journal list exists without its record
--   {'layout', key, shards, layout}  the shard was written with another shard count or layout
--   {'cancelled', reason}            a checkpoint would move a cancelled saga forward
--   {'signalpending', name}          a checkpoint's unless_signal names a pending signal
--   {'unconsumable', signal_id}      a checkpoint's consume_signal is not a pending signal
--   {'refused', why}                 a signal the saga does not accept ('rollback', 'past')
--
-- A record's head field holds what the scripts read and check, eight parts separated by
-- spaces: <version> <status> <updated µs> <expires µs or ''> <attempts> <flags> <token> <owner>
-- (flags: 1 parked + 2 an error field is stored + 4 a cancel is requested, its reason in the
-- cancel field; owner: the rest of the text, '' when unleased). Times are the server's
-- (TIME), in microseconds since the epoch.
--
-- A WAITING saga's record also has a wait field, '<wake µs or empty> <signal name as a JSON
-- string, or empty>'. Its pending signals are in the hash signals:<id> (same hash tag), one
-- field per signal id ever delivered: '<seq> <delivered µs> <token> <name as a JSON
-- string>\n<payload>' while pending, '' once consumed (so a retried delivery is still a
-- duplicate); seq is the hash's length at delivery (fields are never removed), the delivery
-- order. A WAITING saga that is not parked is in the shard's due index (scored by its wake
-- time, +inf when it waits for a signal only), leased or not, and in its waiting index (by
-- update time), never in updated.

-- The head's parts, as string.match captures them.
local HEAD_PATTERN = '^(%d+) (%l+) (%d+) (%d*) (%d+) ([0-7]) (%S+) (.*)$'

-- A number as digits, whatever its size (tostring would give 1.7e+15).
local function int(n)
  return string.format('%d', n)
end

-- The server's clock, in microseconds since the epoch.
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The Redis type of `key` ('none' when it does not exist).
local function kind(key)
  return redis.call('TYPE', key)['ok']
end

-- The failure reply for a command on `key` that failed with the error table `reply`
-- (redis.pcall's): a wrong type names the key and the type found; any other error (OOM,
-- READONLY ...) goes back to the client as the error reply it is.
local function refused(reply, key)
  if string.find(reply.err, 'WRONGTYPE', 1, true) then
    return {'type', key, kind(key)}
  end
  return reply
end

-- A failure reply when `key` exists with another type than the one `probe` (a read-only O(1)
-- command of that type: ZCARD, LLEN, HLEN) works on, else nil.
local function expect(key, probe)
  local found = redis.pcall(probe, key)
  if type(found) == 'table' then
    return refused(found, key)
  end
  return nil
end

-- The record's head, parsed, or nil and a failure reply. One read: a key of another type
-- fails it, and a missing key reads as a hash without the field (told apart from a foreign
-- hash only then).
local function head(record)
  local text = redis.pcall('HGET', record, 'head')
  if type(text) == 'table' then
    return nil, refused(text, record)
  end
  local version, status, updated, expires, attempts, flags, token, owner
  if text then
    version, status, updated, expires, attempts, flags, token, owner =
      string.match(text, HEAD_PATTERN)
  end
  local live = status == 'running' or status == 'compensating' or status == 'failed'
    or status == 'waiting'
  -- A number of more than 18 digits would not come back from Lua's numbers as it was: a
  -- write would store garbage in place of the version or a time.
  if not (live or status == 'completed' or status == 'compensated') or #version > 18
      or #updated > 18 or #expires > 18 or #attempts > 18 then
    if redis.call('EXISTS', record) == 0 then
      return nil, {'missing'}
    end
    return nil, {'corrupt', record}
  end
  flags = tonumber(flags)
  return {version = tonumber(version), status = status, live = live,
          updated = tonumber(updated), expires = tonumber(expires), attempts = attempts,
          parked = flags % 2 == 1, has_error = flags % 4 >= 2, cancelled = flags >= 4,
          token = token, owner = owner}, nil
end

-- A head's text with the given version, status, update time, lease (owner '' releases it),
-- attempts, flags and token.
local function head_text(version, status, updated, owner, expires, attempts, parked,
                         has_error, token, cancelled)
  local flags = 0
  if parked then
    flags = 1
  end
  if has_error then
    flags = flags + 2
  end
  if cancelled then
    flags = flags + 4
  end
  local until_text = ''
  if owner ~= '' then
    until_text = int(expires)
  end
  return int(version) .. ' ' .. status .. ' ' .. int(updated) .. ' ' .. until_text .. ' '
    .. attempts .. ' ' .. flags .. ' ' .. token .. ' ' .. owner
end

-- Check the shard count and layout a shard is written with: returns whether the shard is new
-- (its meta is for the caller to record, after its own checks), and a failure reply or nil.
local function layout(meta, shards, layout_version)
  local m = redis.pcall('HMGET', meta, 'shards', 'layout')
  if m.err then
    return false, refused(m, meta)
  end
  if m[1] == shards and m[2] == layout_version then
    return false, nil
  end
  if m[1] or m[2] or redis.call('EXISTS', meta) == 1 then
    return false, {'layout', meta, m[1] or '', m[2] or ''}
  end
  return true, nil
end

-- Append ARGV[first..] (at least one) to the journal list, then keep at most `cap` entries
-- ('' = all). Returns a failure reply when the journal is of another type (the first RPUSH
-- then wrote nothing), else nil.
local function append_journal(journal, first, cap)
  local last = #ARGV
  local length = redis.pcall('RPUSH', journal, unpack(ARGV, first, math.min(first + 999, last)))
  if type(length) == 'table' then
    return refused(length, journal)
  end
  for i = first + 1000, last, 1000 do
    length = redis.call('RPUSH', journal, unpack(ARGV, i, math.min(i + 999, last)))
  end
  if cap ~= '' and length > tonumber(cap) then
    redis.call('LTRIM', journal, -tonumber(cap), -1)
  end
  return nil
end

-- Lease a recoverable saga to `owner`: version + 1, attempts + 1, new lease, new update time,
-- also the score of its entry in `index` (updated; waiting for a WAITING saga, whose due
-- entry keeps its wake time: an abandoned claim keeps its place).
local function take(record, index, id, h, owner, lease_us, token, now)
  local stamp = math.max(now, h.updated + 1)
  redis.call('HSET', record, 'head',
             head_text(h.version + 1, h.status, stamp, owner, stamp + tonumber(lease_us),
                       h.attempts + 1, h.parked, h.has_error, token, h.cancelled))
  redis.call('ZADD', index, int(stamp), id)
end

-- Whether a saga with head `h` is in the due and waiting indexes (WAITING, not parked)
-- rather than in updated.
local function in_due(h)
  return h.status == 'waiting' and not h.parked
end

-- A WAITING record's wait field, parsed: its wake time (a number, nil for none) and the name
-- of the signal it waits for as a JSON string ('' for none).
local function wait_of(record)
  local text = redis.call('HGET', record, 'wait')
  if not text then
    return nil, ''
  end
  local wake, name = string.match(text, '^(%d*) (.*)$')
  return tonumber(wake), name or ''
end

-- The names (JSON strings) of the pending signals in `signals`, as a set, or nil and a
-- failure reply when the key is of another type.
local function pending_names(signals)
  local values = redis.pcall('HVALS', signals)
  if values.err then
    return nil, refused(values, signals)
  end
  local names = {}
  for _, value in ipairs(values) do
    if value ~= '' then
      names[string.match(value, '^%d+ %d+ %S+ ([^\n]*)\n') or ''] = true
    end
  end
  return names, nil
end

-- Make a WAITING saga due at `now` unless it is due earlier: its wait field, and its due entry
-- (none while parked).
local function wake_now(record, due, id, h, now)
  local wake, name = wait_of(record)
  if wake == nil or wake > now then
    redis.call('HSET', record, 'wait', int(now) .. ' ' .. name)
    if in_due(h) then
      redis.call('ZADD', due, 'XX', int(now), id)
    end
  end
end

-- Tell the workers listening on `channel` (the prefix's work channel) that the saga with head
-- `h` is due now, unless it is parked (no worker may claim it). PUBLISH takes no key: on a
-- cluster the message reaches every node, whatever slot the saga's keys are in.
local function notify(channel, id, h)
  if not h.parked then
    redis.call('PUBLISH', channel, id)
  end
end

-- A record's hash fields (HGETALL) followed by its pending signals as fields
-- 'signal:<id>' (a record's own fields never start so), or, when the signals key is of
-- another type, a field '~signals' holding that type: the client reports it.
local function record_fields(record, signals)
  local fields = redis.call('HGETALL', record)
  local entries = redis.pcall('HGETALL', signals)
  if entries.err then
    fields[#fields + 1] = '~signals'
    fields[#fields + 1] = kind(signals)
    return fields
  end
  for i = 1, #entries, 2 do
    if entries[i + 1] ~= '' then
      fields[#fields + 1] = 'signal:' .. entries[i]
      fields[#fields + 1] = entries[i + 1]
    end
  end
  return fields
end

