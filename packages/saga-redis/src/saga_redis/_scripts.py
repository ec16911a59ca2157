"""The Lua scripts that read and write sagas, one atomic round trip each.

The scripts are constant source text: everything a caller supplies (ids, names, contexts,
journal entries) reaches them as ``KEYS``/``ARGV`` data and is only ever stored or compared,
never evaluated. Each script checks everything first and writes last, so a refused call
returns a failure reply and leaves every key as it was. (Redis does not undo the writes of a
script that fails halfway, so this is kept strictly.) Checking costs as few commands as it can:
the read a script needs anyway is run with ``redis.pcall``, so that a key of another type fails
it instead of needing a ``TYPE`` first, and one key may be checked by the script's first write
itself, which writes nothing when it fails. A failure reply is a table whose first element
names the failure; :mod:`saga_redis._replies` turns it into the core's errors:

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

# Helpers, in the order they are defined; each script includes the ones it uses (and their
# dependencies): a script defines its helpers anew on every call, so unused ones cost time.
_HELPERS = (
    (
        "int",
        (),
        r"""
local function int(n)
  return string.format('%d', n)
end
""",
    ),
    (
        "now_us",
        (),
        r"""
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
""",
    ),
    (
        "kind",
        (),
        r"""
local function kind(key)
  return redis.call('TYPE', key)['ok']
end
""",
    ),
    (
        "refused",
        ("kind",),
        r"""
-- The failure reply for a command on `key` that failed with the error table `reply`
-- (redis.pcall's): a wrong type names the key and the type found; any other error (OOM,
-- READONLY ...) goes back to the client as the error reply it is.
local function refused(reply, key)
  if string.find(reply.err, 'WRONGTYPE', 1, true) then
    return {'type', key, kind(key)}
  end
  return reply
end
""",
    ),
    (
        "expect",
        ("refused",),
        r"""
-- A failure reply when `key` exists with another type than the one `probe` (a read-only O(1)
-- command of that type: ZCARD, LLEN, HLEN) works on, else nil.
local function expect(key, probe)
  local found = redis.pcall(probe, key)
  if type(found) == 'table' then
    return refused(found, key)
  end
  return nil
end
""",
    ),
    (
        "head",
        ("refused",),
        r"""
-- The fields of a record every write checks (with `recovery`, also the lease expiry and the
-- claim count), or nil and a failure reply. One read: a key of another type fails it, and a
-- missing key reads as a hash without these fields (told apart from a foreign hash only then).
local function head(record, recovery)
  local h
  if recovery then
    h = redis.pcall('HMGET', record, 'version', 'status', 'updated', 'owner', 'token', 'error',
                    'parked', 'expires', 'attempts')
  else
    h = redis.pcall('HMGET', record, 'version', 'status', 'updated', 'owner', 'token', 'error',
                    'parked')
  end
  if h.err then
    return nil, refused(h, record)
  end
  local version, status, updated = tonumber(h[1]), h[2], tonumber(h[3])
  -- live: a status recovery acts on; completed and compensated are final.
  local live = status == 'running' or status == 'compensating' or status == 'failed'
  if version == nil or updated == nil
      or not (live or status == 'completed' or status == 'compensated') then
    if redis.call('EXISTS', record) == 0 then
      return nil, {'missing'}
    end
    return nil, {'corrupt', record}
  end
  -- Records written before attempts and parking existed have neither field: 0, not parked.
  return {version = version, status = status, live = live, updated = updated, owner = h[4],
          token = h[5], has_error = h[6] ~= false, parked = h[7] == '1',
          expires = tonumber(h[8]), attempts = tonumber(h[9]) or 0}, nil
end
""",
    ),
    (
        "layout",
        ("refused",),
        r"""
-- Check the shard count and layout a shard is written with: returns whether the shard is new
-- (its meta is for the caller to record, after its own checks), and a failure reply or nil.
local function layout(meta, shards, version)
  local m = redis.pcall('HMGET', meta, 'shards', 'layout')
  if m.err then
    return false, refused(m, meta)
  end
  if m[1] == shards and m[2] == version then
    return false, nil
  end
  if m[1] or m[2] or redis.call('EXISTS', meta) == 1 then
    return false, {'layout', meta, m[1] or '', m[2] or ''}
  end
  return true, nil
end
""",
    ),
    (
        "append_journal",
        ("refused",),
        r"""
-- Append ARGV[first..] (at least one) to the journal list, then keep at most `cap` entries
-- ('' = all). The first RPUSH may be the script's first write, in place of a type check: a
-- journal of another type fails it before anything is written, and the failure reply is
-- returned (nil on success).
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
""",
    ),
    (
        "take",
        ("int",),
        r"""
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
""",
    ),
)


def _script(body: str, *uses: str) -> str:
    """``body`` after the helpers it uses (named in ``uses``) and theirs."""
    depends = {name: needs for name, needs, _ in _HELPERS}
    wanted: set[str] = set()
    todo = list(uses)
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(depends[name])
    return "".join(source for name, _, source in _HELPERS if name in wanted) + body


#: KEYS: record, journal, updated index, lease index, shard meta.
#: ARGV: saga id, saga name, context, lease owner, lease µs, write token, journal cap,
#: shard count, layout version, has next step ('1'/'0'), next step, journal entries...
CREATE = _script(
    r"""
local record, journal, updated, leases, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local fresh, err = layout(meta, ARGV[8], ARGV[9])
if err then
  return err
end
-- One look at both of the saga's keys; only when one exists is it worth knowing which.
if redis.call('EXISTS', record, journal) > 0 then
  local found = kind(record)
  if found == 'hash' then
    local h, bad = head(record, false)
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
  end
  return {'type', journal, found}
end
err = expect(leases, 'ZCARD')
if err then
  return err
end
local now = now_us()
local stamp, expires = int(now), int(now + tonumber(ARGV[5]))
-- The first write, in place of a type check: a recovery index of another type fails it
-- before anything is written.
local added = redis.pcall('ZADD', updated, stamp, ARGV[1])
if type(added) == 'table' then
  return refused(added, updated)
end
if fresh then
  redis.call('HSET', meta, 'shards', ARGV[8], 'layout', ARGV[9])
end
local fields = {'name', ARGV[2], 'status', 'running', 'version', '1', 'cursor', '0',
                'applied', '[]', 'context', ARGV[3], 'created', stamp, 'updated', stamp,
                'owner', ARGV[4], 'expires', expires, 'token', ARGV[6]}
if ARGV[10] == '1' then
  fields[#fields + 1] = 'next_step'
  fields[#fields + 1] = ARGV[11]
end
redis.call('HSET', record, unpack(fields))
redis.call('ZADD', leases, expires, ARGV[1])
if #ARGV >= 12 then
  append_journal(journal, 12, ARGV[7])  -- the journal does not exist: this cannot fail
end
return 0
""",
    "int",
    "now_us",
    "kind",
    "expect",
    "head",
    "layout",
    "append_journal",
)

#: KEYS: record, journal, updated index, lease index, parked index, finished index.
#: ARGV: saga id, retention ms ('' keeps), journal cap ('' keeps all), lease owner ('' releases),
#: lease µs (the same for every checkpoint of a saga by one runner, so the client frames them
#: once), then expected version, status, cursor, applied (JSON), context, write token, flags
#: (2 if an error follows + 1 if a next step follows), the error and the next step (each only
#: when flagged), journal entries...
CHECKPOINT = _script(
    r"""
-- The most frequent script, so written out in full: what head(), now_us() and
-- append_journal() do elsewhere is inlined here (each call of a helper costs, and so does
-- defining it on every run).
local record, journal, updated, leases, id = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local parked, finished = KEYS[5], KEYS[6]
-- As head(): one read, which a key of another type fails.
local h = redis.pcall('HMGET', record, 'version', 'status', 'updated', 'owner', 'token',
                      'error', 'parked')
if h.err then
  return refused(h, record)
end
local version, stored_status, stored_updated = tonumber(h[1]), h[2], tonumber(h[3])
local live = stored_status == 'running' or stored_status == 'compensating'
  or stored_status == 'failed'
if version == nil or stored_updated == nil
    or not (live or stored_status == 'completed' or stored_status == 'compensated') then
  if redis.call('EXISTS', record) == 0 then
    return {'missing'}
  end
  return {'corrupt', record}
end
local stored_owner, is_parked = h[4], h[7] == '1'
if h[5] == ARGV[11] then
  return 0  -- this very write, retried by the client after a lost reply
end
if not live then
  return {'finished', stored_status}
end
if version ~= tonumber(ARGV[6]) then
  return {'conflict', int(version)}
end
local status, flags, at = ARGV[7], tonumber(ARGV[12]), 13
local error_text, next_step
if flags >= 2 then
  error_text, at = ARGV[at], at + 1
end
if flags % 2 == 1 then
  next_step, at = ARGV[at], at + 1
end
local terminal = status == 'completed' or status == 'compensated'
local last = #ARGV
local entries = last >= at
-- Every other key is checked before the first write. With entries to append, the journal is
-- not: its append is the first write, and fails before anything is written if it must.
local err = (not entries and expect(journal, 'LLEN')) or expect(updated, 'ZCARD')
  or expect(leases, 'ZCARD') or (terminal and expect(finished, 'ZCARD'))
  or (is_parked and expect(parked, 'ZCARD'))
if err then
  return err
end
local t = redis.call('TIME')
local stamp = int(math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]), stored_updated + 1))
if entries then
  -- As append_journal().
  local length = redis.pcall('RPUSH', journal, unpack(ARGV, at, math.min(at + 999, last)))
  if type(length) == 'table' then
    return refused(length, journal)
  end
  for i = at + 1000, last, 1000 do
    length = redis.call('RPUSH', journal, unpack(ARGV, i, math.min(i + 999, last)))
  end
  local cap = ARGV[3]
  if cap ~= '' and length > tonumber(cap) then
    redis.call('LTRIM', journal, -tonumber(cap), -1)
  end
end
-- Only what changes: a status or an owner that stays is not written again.
local fields = {'version', int(version + 1), 'cursor', ARGV[8], 'applied', ARGV[9],
                'context', ARGV[10], 'updated', stamp, 'token', ARGV[11]}
local n = #fields
if status ~= stored_status then
  fields[n + 1], fields[n + 2], n = 'status', status, n + 2
end
-- Fields to remove, in one HDEL: an absent field reads as None.
local drop = {}
if error_text then
  fields[n + 1], fields[n + 2], n = 'error', error_text, n + 2
elseif h[6] then
  drop[#drop + 1] = 'error'
end
if next_step then
  fields[n + 1], fields[n + 2], n = 'next_step', next_step, n + 2
else
  drop[#drop + 1] = 'next_step'  -- past the last step; absent reads as None
end
local owner = ARGV[4]
if terminal or owner == '' then
  if stored_owner then
    drop[#drop + 1] = 'owner'
    drop[#drop + 1] = 'expires'
  end
  redis.call('ZREM', leases, id)
else
  local expires = int(tonumber(stamp) + tonumber(ARGV[5]))
  if owner ~= stored_owner then
    fields[n + 1], fields[n + 2], n = 'owner', owner, n + 2
  end
  fields[n + 1], fields[n + 2], n = 'expires', expires, n + 2
  redis.call('ZADD', leases, expires, id)
end
if #drop > 0 then
  redis.call('HDEL', record, unpack(drop))
end
redis.call('HSET', record, unpack(fields))
if is_parked then
  -- A parked saga stays out of the recovery index (and, finished, stays listed as parked).
  redis.call('ZADD', parked, stamp, id)
elseif terminal then
  redis.call('ZREM', updated, id)
else
  redis.call('ZADD', updated, stamp, id)
end
if terminal then
  redis.call('ZADD', finished, stamp, id)
  local retention = ARGV[2]
  if retention ~= '' then
    redis.call('PEXPIRE', record, retention)
    redis.call('PEXPIRE', journal, retention)
    -- Entries of sagas finished longer ago than the retention time: their records are gone.
    -- The index itself expires with the last saga that finished.
    redis.call('ZREMRANGEBYSCORE', finished, '-inf',
               '(' .. int(tonumber(stamp) - tonumber(retention) * 1000))
    redis.call('PEXPIRE', finished, retention)
  end
end
return 0
""",
    "int",
    "expect",
)

#: KEYS: record, updated index, lease index, shard meta.
#: ARGV: saga id, owner, lease µs, write token, shard count, layout version.
CLAIM = _script(
    r"""
local record, updated, leases, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local fresh, err = layout(meta, ARGV[5], ARGV[6])
if err then
  return err
end
local h
h, err = head(record, true)
if err then
  return err
end
if not h.live then
  return {'finished', h.status}
end
if h.parked then
  return {'parked'}
end
err = expect(updated, 'ZCARD') or expect(leases, 'ZCARD')
if err then
  return err
end
local now = now_us()
if h.owner and h.owner ~= ARGV[2] and h.expires and h.expires > now then
  return {'leased', h.owner, int(h.expires)}
end
if fresh then
  redis.call('HSET', meta, 'shards', ARGV[5], 'layout', ARGV[6])
end
take(record, updated, leases, ARGV[1], h, ARGV[2], ARGV[3], ARGV[4], now)
return {'ok', redis.call('HGETALL', record)}
""",
    "int",
    "now_us",
    "expect",
    "head",
    "layout",
    "take",
)

#: Recoverable sagas of one shard, oldest update first; claims them in mode 'claim'.
#: KEYS: updated index, lease index, shard meta, parked index.
#: ARGV: mode ('claim' or 'list'), limit, record key stem, owner, lease µs, write token,
#: shard count, layout version, and optionally the only saga ids to consider...
#: Reply: {'ok', id, fields, id, fields, ...}. The record keys are the stem followed by the
#: id: they share the shard's hash slot, so this stays a single-slot script on a cluster.
SCAN = _script(
    r"""
local updated, leases, meta, stem = KEYS[1], KEYS[2], KEYS[3], ARGV[3]
local claim = ARGV[1] == 'claim'
local limit = tonumber(ARGV[2])
local fresh, err = layout(meta, ARGV[7], ARGV[8])
err = err or expect(updated, 'ZCARD') or expect(leases, 'ZCARD')
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
  local h, bad = head(stem .. id, true)
  if bad and bad[1] ~= 'missing' then
    return bad
  end
  if h and h.parked then
    misfiled[#misfiled + 1] = {id, h.updated}  -- parked: belongs in the parked index
  elseif h and h.live then
    heads[#heads + 1] = {id, h}
  else
    stale[#stale + 1] = id  -- deleted by hand, or finished: not recoverable
  end
end
if claim and #misfiled > 0 then
  err = expect(KEYS[4], 'ZCARD')
  if err then
    return err
  end
end
if fresh then
  redis.call('HSET', meta, 'shards', ARGV[7], 'layout', ARGV[8])
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
""",
    "int",
    "now_us",
    "expect",
    "head",
    "layout",
    "take",
)

#: KEYS: record, lease index. ARGV: saga id, owner, lease µs.
#: Extends the owner's lease; changes nothing else (not the version, the update time or the
#: write token, so a checkpoint retried after a renewal is still recognised).
RENEW = _script(
    r"""
local record, leases = KEYS[1], KEYS[2]
local h, err = head(record, false)
if err then
  return err
end
if not h.live then
  return {'finished', h.status}
end
if h.owner ~= ARGV[2] then
  return {'notowner', h.owner or ''}
end
err = expect(leases, 'ZCARD')
if err then
  return err
end
local expires = int(now_us() + tonumber(ARGV[3]))
redis.call('HSET', record, 'expires', expires)
redis.call('ZADD', leases, expires, ARGV[1])
return 0
""",
    "int",
    "now_us",
    "expect",
    "head",
)

#: KEYS: record, updated index, lease index, parked index.
#: ARGV: saga id, owner, reason, write token.
#: The dead-letter state: parked, the reason as error, no lease, version + 1, out of the
#: recovery indexes and into the parked one.
PARK = _script(
    r"""
local record, updated, leases, parked, id = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local h, err = head(record, false)
if err then
  return err
end
if h.token == ARGV[4] then
  return 0  -- this very write, retried by the client after a lost reply
end
if not h.live then
  return {'finished', h.status}
end
if h.owner ~= ARGV[2] then
  return {'notowner', h.owner or ''}
end
err = expect(updated, 'ZCARD') or expect(leases, 'ZCARD') or expect(parked, 'ZCARD')
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
""",
    "int",
    "now_us",
    "expect",
    "head",
)

#: KEYS: record, updated index, parked index, finished index. ARGV: saga id.
#: Reply: {'ok', fields}. A saga that is not parked is left as it is.
UNPARK = _script(
    r"""
local record, updated, parked, finished, id = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local h, err = head(record, false)
if err then
  return err
end
if h.parked then
  local index = updated
  if not h.live then
    index = finished
  end
  err = expect(parked, 'ZCARD') or expect(index, 'ZCARD')
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
""",
    "int",
    "now_us",
    "expect",
    "head",
)

#: One page of one index (updated, parked or finished) of one shard, oldest update first,
#: filtered: what ``list_sagas`` pages through.
#: KEYS: the index, shard meta.
#: ARGV: record key stem, min score (inclusive), offset among the members at that score,
#: max score ('+inf' or '(µs'), page size, matches wanted, status ('' any), name ('' any, else
#: '=' followed by the name), parked ('' any, '1', '0'), shard count, layout version.
#: Reply: {'ok', done (1/0), next min score, next offset, id, fields, id, fields, ...}.
#: Members whose record is gone (expired, deleted by hand) are removed from the index.
LIST = _script(
    r"""
local index, meta, stem = KEYS[1], KEYS[2], ARGV[1]
local fresh, err = layout(meta, ARGV[10], ARGV[11])
err = err or expect(index, 'ZCARD')
if err then
  return err
end
if fresh then
  redis.call('HSET', meta, 'shards', ARGV[10], 'layout', ARGV[11])
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
""",
    "kind",
    "expect",
    "layout",
)

#: KEYS: record, journal. ARGV: what to read, 'record' or 'journal'.
#: A record hash is never empty, so an empty reply means there is none.
READ = _script(
    r"""
if ARGV[1] == 'journal' then
  local fields = redis.pcall('HLEN', KEYS[1])
  if type(fields) == 'table' then
    return refused(fields, KEYS[1])
  end
  if fields == 0 then
    return {'missing'}
  end
  local items = redis.pcall('LRANGE', KEYS[2], 0, -1)
  if items.err then
    return refused(items, KEYS[2])
  end
  return {'ok', items}
end
local fields = redis.pcall('HGETALL', KEYS[1])
if fields.err then
  return refused(fields, KEYS[1])
end
if #fields == 0 then
  return {'missing'}
end
return {'ok', fields}
""",
    "refused",
)
