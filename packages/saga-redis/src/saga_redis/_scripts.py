"""The Lua scripts that read and write sagas, one atomic round trip each.

The scripts are constant source text: everything a caller supplies (ids, names, contexts,
journal entries) reaches them as ``KEYS``/``ARGV`` data and is only ever stored or compared,
never evaluated. Each script checks everything first and writes last, so a refused call
returns a failure reply and leaves every key as it was. A failure reply is a table whose first
element names the failure; :mod:`saga_redis._replies` turns it into the core's errors:

* ``{'missing'}``: no saga record;
* ``{'exists'}``: ``create`` of an id that is stored already;
* ``{'finished', status}``: the saga is COMPLETED or COMPENSATED;
* ``{'conflict', version}``: the stored version is not the expected one;
* ``{'leased', owner, expires_us}``: another owner's lease is live;
* ``{'type', key, type}``: a key holds a Redis type this storage never writes there;
* ``{'corrupt', key}``: a record hash lacks its version, status or update time;
* ``{'orphan', key}``: a journal list exists without its record;
* ``{'layout', key, shards, layout}``: the shard was written with another shard count.

Time comes from the server (``TIME``), in microseconds since the epoch, so every client sees
one clock; a record's ``updated`` never moves backwards even if that clock does.
"""

from __future__ import annotations

# Shared helpers, prepended to every script.
_PRELUDE = r"""
-- Statuses a record may hold; true for the ones recovery acts on.
local STATUSES = {running = true, compensating = true, failed = true,
                  completed = false, compensated = false}

local function kind(key)
  return redis.call('TYPE', key)['ok']
end

-- A failure reply when `key` exists with a type other than `want`, else nil.
local function expect(key, want)
  local found = kind(key)
  if found ~= 'none' and found ~= want then
    return {'type', key, found}
  end
  return nil
end

local function int(n)
  return string.format('%d', n)
end

local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- The fields of a record every write checks, or nil and a failure reply.
local function head(record)
  local found = kind(record)
  if found == 'none' then
    return nil, {'missing'}
  end
  if found ~= 'hash' then
    return nil, {'type', record, found}
  end
  local h = redis.call('HMGET', record, 'version', 'status', 'updated', 'owner', 'expires',
                       'token', 'error')
  local version, updated = tonumber(h[1]), tonumber(h[3])
  if version == nil or updated == nil or STATUSES[h[2]] == nil then
    return nil, {'corrupt', record}
  end
  return {version = version, status = h[2], updated = updated, owner = h[4],
          expires = tonumber(h[5]), token = h[6], has_error = h[7] ~= false}, nil
end

-- Check (and on first use record) the shard count and layout a shard is written with.
local function check_layout(meta, shards, layout)
  local found = kind(meta)
  if found == 'none' then
    redis.call('HSET', meta, 'shards', shards, 'layout', layout)
    return nil
  end
  if found ~= 'hash' then
    return {'type', meta, found}
  end
  local m = redis.call('HMGET', meta, 'shards', 'layout')
  if m[1] ~= shards or m[2] ~= layout then
    return {'layout', meta, m[1] or '', m[2] or ''}
  end
  return nil
end

-- Append ARGV[first..] to the journal list, then keep at most `cap` entries ('' = all).
local function append_journal(journal, first, cap)
  local last = #ARGV
  if first > last then
    return
  end
  local length = 0
  for i = first, last, 1000 do
    length = redis.call('RPUSH', journal, unpack(ARGV, i, math.min(i + 999, last)))
  end
  if cap ~= '' and length > tonumber(cap) then
    redis.call('LTRIM', journal, -tonumber(cap), -1)
  end
end

-- Lease a recoverable saga to `owner`: version + 1, new lease, new update time.
local function take(record, updated, leases, id, h, owner, lease_us, token, now)
  local stamp = math.max(now, h.updated + 1)
  local expires = int(stamp + tonumber(lease_us))
  stamp = int(stamp)
  redis.call('HSET', record, 'version', int(h.version + 1), 'owner', owner,
             'expires', expires, 'updated', stamp, 'token', token)
  redis.call('ZADD', updated, stamp, id)
  redis.call('ZADD', leases, expires, id)
end
"""

#: KEYS: record, journal, updated index, lease index, shard meta.
#: ARGV: saga id, saga name, context, lease owner, lease µs, write token, journal cap,
#: shard count, layout version, journal entries...
CREATE = (
    _PRELUDE
    + r"""
local record, journal, updated, leases = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local err = check_layout(KEYS[5], ARGV[8], ARGV[9])
if err then
  return err
end
local found = kind(record)
if found == 'hash' then
  local h, bad = head(record)
  if bad then
    return bad
  end
  if h.token == ARGV[6] then
    return 0  -- this very create, retried by the client after a lost reply
  end
  return {'exists'}
elseif found ~= 'none' then
  return {'type', record, found}
end
found = kind(journal)
if found == 'list' then
  return {'orphan', journal}
elseif found ~= 'none' then
  return {'type', journal, found}
end
err = expect(updated, 'zset') or expect(leases, 'zset')
if err then
  return err
end
local now = now_us()
local stamp, expires = int(now), int(now + tonumber(ARGV[5]))
redis.call('HSET', record, 'name', ARGV[2], 'status', 'running', 'version', '1', 'cursor', '0',
           'applied', '[]', 'context', ARGV[3], 'created', stamp, 'updated', stamp,
           'owner', ARGV[4], 'expires', expires, 'token', ARGV[6])
redis.call('ZADD', updated, stamp, ARGV[1])
redis.call('ZADD', leases, expires, ARGV[1])
append_journal(journal, 10, ARGV[7])
return 0
"""
)

#: KEYS: record, journal, updated index, lease index.
#: ARGV: saga id, expected version, status, terminal ('1'/'0'), cursor, applied (JSON),
#: context, has error ('1'/'0'), error, lease owner ('' releases), lease µs, write token,
#: retention ms ('' keeps), journal cap ('' keeps all), journal entries...
CHECKPOINT = (
    _PRELUDE
    + r"""
local record, journal, updated, leases, id = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local h, err = head(record)
if err then
  return err
end
if h.token == ARGV[12] then
  return 0  -- this very write, retried by the client after a lost reply
end
if not STATUSES[h.status] then
  return {'finished', h.status}
end
if h.version ~= tonumber(ARGV[2]) then
  return {'conflict', int(h.version)}
end
err = expect(journal, 'list') or expect(updated, 'zset') or expect(leases, 'zset')
if err then
  return err
end
local terminal = ARGV[4] == '1'
local stamp = int(math.max(now_us(), h.updated + 1))
local fields = {'status', ARGV[3], 'version', int(h.version + 1), 'cursor', ARGV[5],
                'applied', ARGV[6], 'context', ARGV[7], 'updated', stamp, 'token', ARGV[12]}
if ARGV[8] == '1' then
  fields[#fields + 1] = 'error'
  fields[#fields + 1] = ARGV[9]
elseif h.has_error then
  redis.call('HDEL', record, 'error')
end
if terminal or ARGV[10] == '' then
  if h.owner then
    redis.call('HDEL', record, 'owner', 'expires')
  end
  redis.call('ZREM', leases, id)
else
  local expires = int(tonumber(stamp) + tonumber(ARGV[11]))
  fields[#fields + 1] = 'owner'
  fields[#fields + 1] = ARGV[10]
  fields[#fields + 1] = 'expires'
  fields[#fields + 1] = expires
  redis.call('ZADD', leases, expires, id)
end
redis.call('HSET', record, unpack(fields))
if terminal then
  redis.call('ZREM', updated, id)
else
  redis.call('ZADD', updated, stamp, id)
end
append_journal(journal, 15, ARGV[14])
if terminal and ARGV[13] ~= '' then
  redis.call('PEXPIRE', record, ARGV[13])
  redis.call('PEXPIRE', journal, ARGV[13])
end
return 0
"""
)

#: KEYS: record, updated index, lease index, shard meta.
#: ARGV: saga id, owner, lease µs, write token, shard count, layout version.
CLAIM = (
    _PRELUDE
    + r"""
local record, updated, leases = KEYS[1], KEYS[2], KEYS[3]
local err = check_layout(KEYS[4], ARGV[5], ARGV[6])
if err then
  return err
end
local h
h, err = head(record)
if err then
  return err
end
if not STATUSES[h.status] then
  return {'finished', h.status}
end
err = expect(updated, 'zset') or expect(leases, 'zset')
if err then
  return err
end
local now = now_us()
if h.owner and h.owner ~= ARGV[2] and h.expires and h.expires > now then
  return {'leased', h.owner, int(h.expires)}
end
take(record, updated, leases, ARGV[1], h, ARGV[2], ARGV[3], ARGV[4], now)
return {'ok', redis.call('HGETALL', record)}
"""
)

#: Recoverable sagas of one shard, oldest update first; claims them in mode 'claim'.
#: KEYS: updated index, lease index, shard meta.
#: ARGV: mode ('claim' or 'list'), limit, record key stem, owner, lease µs, write token,
#: shard count, layout version, and optionally the only saga ids to consider...
#: Reply: {'ok', id, fields, id, fields, ...}. The record keys are the stem followed by the
#: id: they share the shard's hash slot, so this stays a single-slot script on a cluster.
SCAN = (
    _PRELUDE
    + r"""
local updated, leases, stem = KEYS[1], KEYS[2], ARGV[3]
local claim = ARGV[1] == 'claim'
local limit = tonumber(ARGV[2])
local err = check_layout(KEYS[3], ARGV[7], ARGV[8])
  or expect(updated, 'zset') or expect(leases, 'zset')
if err then
  return err
end
local now = now_us()
local function due(id)
  local expires = redis.call('ZSCORE', leases, id)
  return not expires or tonumber(expires) <= now
end
local chosen = {}
if #ARGV >= 9 then
  for i = 9, #ARGV do
    if #chosen >= limit then
      break
    end
    if redis.call('ZSCORE', updated, ARGV[i]) and due(ARGV[i]) then
      chosen[#chosen + 1] = ARGV[i]
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
      if due(id) then
        chosen[#chosen + 1] = id
        if #chosen >= limit then
          break
        end
      end
    end
    start = start + batch
  end
end
-- Check every chosen record before writing any.
local heads, stale = {}, {}
for _, id in ipairs(chosen) do
  local h, bad = head(stem .. id)
  if bad and bad[1] ~= 'missing' then
    return bad
  end
  if h and STATUSES[h.status] then
    heads[#heads + 1] = {id, h}
  else
    stale[#stale + 1] = id  -- deleted by hand, or finished: not recoverable
  end
end
local reply = {'ok'}
for _, pair in ipairs(heads) do
  local id, h = pair[1], pair[2]
  if claim then
    take(stem .. id, updated, leases, id, h, ARGV[4], ARGV[5], ARGV[6], now)
  end
  reply[#reply + 1] = id
  reply[#reply + 1] = redis.call('HGETALL', stem .. id)
end
if claim then
  for _, id in ipairs(stale) do
    redis.call('ZREM', updated, id)
    redis.call('ZREM', leases, id)
  end
end
return reply
"""
)

#: KEYS: record, journal. ARGV: what to read, 'record' or 'journal'.
READ = (
    _PRELUDE
    + r"""
local found = kind(KEYS[1])
if found == 'none' then
  return {'missing'}
end
if found ~= 'hash' then
  return {'type', KEYS[1], found}
end
if ARGV[1] == 'journal' then
  local err = expect(KEYS[2], 'list')
  if err then
    return err
  end
  return {'ok', redis.call('LRANGE', KEYS[2], 0, -1)}
end
return {'ok', redis.call('HGETALL', KEYS[1])}
"""
)
