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
* ``{'notowner', owner}``: the lease is not the caller's (``owner`` is ``''`` when unleased);
* ``{'parked'}``: the saga is in the dead-letter state;
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
                       'token', 'error', 'attempts', 'parked')
  local version, updated = tonumber(h[1]), tonumber(h[3])
  if version == nil or updated == nil or STATUSES[h[2]] == nil then
    return nil, {'corrupt', record}
  end
  -- Records written before attempts and parking existed have neither field: 0, not parked.
  return {version = version, status = h[2], updated = updated, owner = h[4],
          expires = tonumber(h[5]), token = h[6], has_error = h[7] ~= false,
          attempts = tonumber(h[8]) or 0, parked = h[9] == '1'}, nil
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

-- Lease a recoverable saga to `owner`: version + 1, attempts + 1, new lease, new update time.
local function take(record, updated, leases, id, h, owner, lease_us, token, now)
  local stamp = math.max(now, h.updated + 1)
  local expires = int(stamp + tonumber(lease_us))
  stamp = int(stamp)
  redis.call('HSET', record, 'version', int(h.version + 1), 'owner', owner,
             'expires', expires, 'updated', stamp, 'token', token,
             'attempts', int(h.attempts + 1))
  redis.call('ZADD', updated, stamp, id)
  redis.call('ZADD', leases, expires, id)
end
"""

#: KEYS: record, journal, updated index, lease index, shard meta.
#: ARGV: saga id, saga name, context, lease owner, lease µs, write token, journal cap,
#: shard count, layout version, has next step ('1'/'0'), next step, journal entries...
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
local fields = {'name', ARGV[2], 'status', 'running', 'version', '1', 'cursor', '0',
                'applied', '[]', 'context', ARGV[3], 'created', stamp, 'updated', stamp,
                'owner', ARGV[4], 'expires', expires, 'token', ARGV[6]}
if ARGV[10] == '1' then
  fields[#fields + 1] = 'next_step'
  fields[#fields + 1] = ARGV[11]
end
redis.call('HSET', record, unpack(fields))
redis.call('ZADD', updated, stamp, ARGV[1])
redis.call('ZADD', leases, expires, ARGV[1])
append_journal(journal, 12, ARGV[7])
return 0
"""
)

#: KEYS: record, journal, updated index, lease index, parked index, finished index.
#: ARGV: saga id, expected version, status, terminal ('1'/'0'), cursor, applied (JSON),
#: context, has error ('1'/'0'), error, lease owner ('' releases), lease µs, write token,
#: retention ms ('' keeps), journal cap ('' keeps all), has next step ('1'/'0'), next step,
#: journal entries...
CHECKPOINT = (
    _PRELUDE
    + r"""
local record, journal, updated, leases, id = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local parked, finished = KEYS[5], KEYS[6]
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
local terminal = ARGV[4] == '1'
err = expect(journal, 'list') or expect(updated, 'zset') or expect(leases, 'zset')
  or (terminal and expect(finished, 'zset')) or (h.parked and expect(parked, 'zset'))
if err then
  return err
end
local stamp = int(math.max(now_us(), h.updated + 1))
local fields = {'status', ARGV[3], 'version', int(h.version + 1), 'cursor', ARGV[5],
                'applied', ARGV[6], 'context', ARGV[7], 'updated', stamp, 'token', ARGV[12]}
-- Fields to remove, in one HDEL: an absent field reads as None.
local drop = {}
if ARGV[8] == '1' then
  fields[#fields + 1] = 'error'
  fields[#fields + 1] = ARGV[9]
elseif h.has_error then
  drop[#drop + 1] = 'error'
end
if ARGV[15] == '1' then
  fields[#fields + 1] = 'next_step'
  fields[#fields + 1] = ARGV[16]
else
  drop[#drop + 1] = 'next_step'  -- past the last step; absent reads as None
end
if terminal or ARGV[10] == '' then
  if h.owner then
    drop[#drop + 1] = 'owner'
    drop[#drop + 1] = 'expires'
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
if #drop > 0 then
  redis.call('HDEL', record, unpack(drop))
end
redis.call('HSET', record, unpack(fields))
if h.parked then
  -- A parked saga stays out of the recovery index (and, finished, stays listed as parked).
  redis.call('ZADD', parked, stamp, id)
elseif terminal then
  redis.call('ZREM', updated, id)
else
  redis.call('ZADD', updated, stamp, id)
end
append_journal(journal, 17, ARGV[14])
if terminal then
  redis.call('ZADD', finished, stamp, id)
  if ARGV[13] ~= '' then
    redis.call('PEXPIRE', record, ARGV[13])
    redis.call('PEXPIRE', journal, ARGV[13])
    -- Entries of sagas finished longer ago than the retention time: their records are gone.
    -- The index itself expires with the last saga that finished.
    redis.call('ZREMRANGEBYSCORE', finished, '-inf',
               '(' .. int(tonumber(stamp) - tonumber(ARGV[13]) * 1000))
    redis.call('PEXPIRE', finished, ARGV[13])
  end
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
if h.parked then
  return {'parked'}
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
#: KEYS: updated index, lease index, shard meta, parked index.
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
local heads, stale, misfiled = {}, {}, {}
for _, id in ipairs(chosen) do
  local h, bad = head(stem .. id)
  if bad and bad[1] ~= 'missing' then
    return bad
  end
  if h and h.parked then
    misfiled[#misfiled + 1] = {id, h.updated}  -- parked: belongs in the parked index
  elseif h and STATUSES[h.status] then
    heads[#heads + 1] = {id, h}
  else
    stale[#stale + 1] = id  -- deleted by hand, or finished: not recoverable
  end
end
if claim and #misfiled > 0 then
  err = expect(KEYS[4], 'zset')
  if err then
    return err
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
  for _, pair in ipairs(misfiled) do
    redis.call('ZREM', updated, pair[1])
    redis.call('ZADD', KEYS[4], int(pair[2]), pair[1])
  end
end
return reply
"""
)

#: KEYS: record, lease index. ARGV: saga id, owner, lease µs.
#: Extends the owner's lease; changes nothing else (not the version, the update time or the
#: write token, so a checkpoint retried after a renewal is still recognised).
RENEW = (
    _PRELUDE
    + r"""
local record, leases = KEYS[1], KEYS[2]
local h, err = head(record)
if err then
  return err
end
if not STATUSES[h.status] then
  return {'finished', h.status}
end
if h.owner ~= ARGV[2] then
  return {'notowner', h.owner or ''}
end
err = expect(leases, 'zset')
if err then
  return err
end
local expires = int(now_us() + tonumber(ARGV[3]))
redis.call('HSET', record, 'expires', expires)
redis.call('ZADD', leases, expires, ARGV[1])
return 0
"""
)

#: KEYS: record, updated index, lease index, parked index.
#: ARGV: saga id, owner, reason, write token.
#: The dead-letter state: parked, the reason as error, no lease, version + 1, out of the
#: recovery indexes and into the parked one.
PARK = (
    _PRELUDE
    + r"""
local record, updated, leases, parked, id = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local h, err = head(record)
if err then
  return err
end
if h.token == ARGV[4] then
  return 0  -- this very write, retried by the client after a lost reply
end
if not STATUSES[h.status] then
  return {'finished', h.status}
end
if h.owner ~= ARGV[2] then
  return {'notowner', h.owner or ''}
end
err = expect(updated, 'zset') or expect(leases, 'zset') or expect(parked, 'zset')
if err then
  return err
end
local stamp = int(math.max(now_us(), h.updated + 1))
redis.call('HSET', record, 'parked', '1', 'error', ARGV[3], 'version', int(h.version + 1),
           'updated', stamp, 'token', ARGV[4])
redis.call('HDEL', record, 'owner', 'expires')
redis.call('ZREM', updated, id)
redis.call('ZREM', leases, id)
redis.call('ZADD', parked, stamp, id)
return 0
"""
)

#: KEYS: record, updated index, parked index, finished index. ARGV: saga id.
#: Reply: {'ok', fields}. A saga that is not parked is left as it is.
UNPARK = (
    _PRELUDE
    + r"""
local record, updated, parked, finished, id = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local h, err = head(record)
if err then
  return err
end
if h.parked then
  local index = updated
  if not STATUSES[h.status] then
    index = finished
  end
  err = expect(parked, 'zset') or expect(index, 'zset')
  if err then
    return err
  end
  local stamp = int(math.max(now_us(), h.updated + 1))
  redis.call('HDEL', record, 'parked', 'attempts')
  redis.call('HSET', record, 'updated', stamp)
  redis.call('ZREM', parked, id)
  redis.call('ZADD', index, stamp, id)
end
return {'ok', redis.call('HGETALL', record)}
"""
)

#: One page of one index (updated, parked or finished) of one shard, oldest update first,
#: filtered: what ``list_sagas`` pages through.
#: KEYS: the index, shard meta.
#: ARGV: record key stem, min score (inclusive), offset among the members at that score,
#: max score ('+inf' or '(µs'), page size, matches wanted, status ('' any), name ('' any, else
#: '=' followed by the name), parked ('' any, '1', '0'), shard count, layout version.
#: Reply: {'ok', done (1/0), next min score, next offset, id, fields, id, fields, ...}.
#: Members whose record is gone (expired, deleted by hand) are removed from the index.
LIST = (
    _PRELUDE
    + r"""
local index, stem = KEYS[1], ARGV[1]
local err = check_layout(KEYS[2], ARGV[10], ARGV[11]) or expect(index, 'zset')
if err then
  return err
end
local page_size, wanted = tonumber(ARGV[5]), tonumber(ARGV[6])
local status, parked = ARGV[7], ARGV[9]
local name = nil
if ARGV[8] ~= '' then
  name = string.sub(ARGV[8], 2)
end
local page = redis.call('ZRANGEBYSCORE', index, ARGV[2], ARGV[4], 'WITHSCORES',
                        'LIMIT', ARGV[3], page_size)
-- The cursor: the last score seen and how many members still there were seen at it.
local last, same = ARGV[2], tonumber(ARGV[3])
local reply = {'ok', 0, '', 0}
local found = 0
local done = #page < 2 * page_size
for i = 1, #page, 2 do
  local id, score = page[i], page[i + 1]
  local record = stem .. id
  local found_kind = kind(record)
  if found_kind == 'none' then
    redis.call('ZREM', index, id)
  elseif found_kind ~= 'hash' then
    return {'type', record, found_kind}
  else
    if score == last then
      same = same + 1
    else
      last, same = score, 1
    end
    local f = redis.call('HMGET', record, 'status', 'name', 'parked')
    if (status == '' or f[1] == status) and (name == nil or f[2] == name)
        and (parked == '' or (f[3] == '1') == (parked == '1')) then
      reply[#reply + 1] = id
      reply[#reply + 1] = redis.call('HGETALL', record)
      found = found + 1
      if found >= wanted then
        done = true
        break
      end
    end
  end
end
reply[2] = done and 1 or 0
reply[3] = last
reply[4] = same
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
