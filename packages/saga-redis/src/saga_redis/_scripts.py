"""The Lua scripts that read and write sagas, one atomic round trip each.

The scripts are constant source text: everything a caller supplies (ids, names, contexts,
journal entries) reaches them as ``KEYS``/``ARGV`` data and is only ever stored or compared,
never evaluated. Each script checks everything before its first write, so a refused call
returns a failure reply and leaves every key as it was. (Redis does not undo the writes of a
script that fails halfway, so this is kept strictly.) Checking costs as few commands as it can:
the read a script needs anyway is run with ``redis.pcall``, so that a key of another type fails
it instead of needing a ``TYPE`` first; the saga's index entry is the first write of a create
or checkpoint, so that it checks the index's type itself; and a checkpoint's journal append,
its second write, puts that entry back as it was when the journal turns out to be of another
type. A failure reply is a table whose first element names the failure;
:mod:`saga_redis._replies` turns it into the core's errors:

* ``{'missing'}``: no saga record;
* ``{'exists'}``: ``create`` of an id that is stored already;
* ``{'finished', status}``: the saga is COMPLETED or COMPENSATED;
* ``{'conflict', version}``: the stored version is not the expected one;
* ``{'leased', owner, expires_us}``: another owner's lease is live;
* ``{'notowner', owner}``: the lease is not the caller's (``owner`` is ``''`` when unleased);
* ``{'parked'}``: the saga is in the dead-letter state;
* ``{'type', key, type}``: a key holds a Redis type this storage never writes there;
* ``{'corrupt', key}``: a record hash has no valid ``head`` field;
* ``{'orphan', key}``: a journal list exists without its record;
* ``{'layout', key, shards, layout}``: the shard was written with another shard count or
  key layout.

A record's ``head`` field holds what the scripts read and check, as one text of eight
space-separated parts (one field read, one field written, instead of a dozen)::

    <version> <status> <updated µs> <expires µs or ''> <attempts> <flags> <token> <owner>

``flags`` is 1 (parked) + 2 (an ``error`` field is stored); ``owner`` is the rest of the text,
``''`` when unleased. The client writes the ``body`` field (cursor, next step, applied steps and
context), which no script reads.

Time comes from the server (``TIME``), in microseconds since the epoch, so every client sees
one clock; a record's ``updated`` never moves backwards even if that clock does.
"""

from __future__ import annotations

# The head's parts, as captured by string.match (see the module's docstring).
_HEAD_PATTERN = "'^(%d+) (%l+) (%d+) (%d*) (%d+) ([0-3]) (%S+) (.*)$'"

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
      string.match(text, """
        + _HEAD_PATTERN
        + r""")
  end
  local live = status == 'running' or status == 'compensating' or status == 'failed'
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
          parked = flags % 2 == 1, has_error = flags >= 2, token = token, owner = owner}, nil
end
""",
    ),
    (
        "head_text",
        ("int",),
        r"""
-- The head of `h` (as head() returns it) with the given version, status, update time,
-- lease (owner '' releases it), attempts, flags and token.
local function head_text(version, status, updated, owner, expires, attempts, parked,
                         has_error, token)
  local flags = 0
  if parked then
    flags = 1
  end
  if has_error then
    flags = flags + 2
  end
  local until_text = ''
  if owner ~= '' then
    until_text = int(expires)
  end
  return int(version) .. ' ' .. status .. ' ' .. int(updated) .. ' ' .. until_text .. ' '
    .. attempts .. ' ' .. flags .. ' ' .. token .. ' ' .. owner
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
""",
    ),
    (
        "take",
        ("head_text",),
        r"""
-- Lease a recoverable saga to `owner`: version + 1, attempts + 1, new lease, new update time.
local function take(record, updated, id, h, owner, lease_us, token, now)
  local stamp = math.max(now, h.updated + 1)
  redis.call('HSET', record, 'head',
             head_text(h.version + 1, h.status, stamp, owner, stamp + tonumber(lease_us),
                       h.attempts + 1, h.parked, h.has_error, token))
  redis.call('ZADD', updated, int(stamp), id)
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


#: KEYS: record, journal, updated index, shard meta.
#: ARGV: saga id, saga name, body, lease owner, lease µs, write token, journal cap, shard count,
#: layout version, journal entries...
CREATE = _script(
    r"""
local record, journal, updated, meta, id = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local fresh, err = layout(meta, ARGV[8], ARGV[9])
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
local now = now_us()
local stamp = int(now)
-- The first write, in place of a type check: a recovery index of another type fails it
-- before anything is written.
local added = redis.pcall('ZADD', updated, stamp, id)
if type(added) == 'table' then
  return refused(added, updated)
end
if fresh then
  redis.call('HSET', meta, 'shards', ARGV[8], 'layout', ARGV[9])
end
redis.call('HSET', record, 'name', ARGV[2], 'created', stamp, 'body', ARGV[3], 'head',
           '1 running ' .. stamp .. ' ' .. int(now + tonumber(ARGV[5])) .. ' 0 0 '
           .. ARGV[6] .. ' ' .. ARGV[4])
if #ARGV >= 10 then
  append_journal(journal, 10, ARGV[7])  -- the journal does not exist: this cannot fail
end
return 0
""",
    "int",
    "now_us",
    "kind",
    "head",
    "layout",
    "append_journal",
)

#: KEYS: record, journal, updated index, parked index, finished index.
#: ARGV: saga id, retention ms ('' keeps), journal cap ('' keeps all), lease owner ('' releases),
#: lease µs (the same for every checkpoint of a saga by one runner, so the client frames them
#: once), then expected version, status, body, write token, '1' if an error follows else '0',
#: the error (only when flagged), journal entries...
CHECKPOINT = _script(
    r"""
-- The most frequent script, so written out in full: what head(), now_us(), head_text() and
-- append_journal() do elsewhere is inlined here (each call of a helper costs, and so does
-- defining it on every run).
local record, journal, updated, id = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local text = redis.pcall('HGET', record, 'head')
if type(text) == 'table' then
  return refused(text, record)
end
local version, stored_status, stored_updated, expires, attempts, flags, token, owner
if text then
  version, stored_status, stored_updated, expires, attempts, flags, token, owner =
    string.match(text, """
    + _HEAD_PATTERN
    + r""")
end
local live = stored_status == 'running' or stored_status == 'compensating'
  or stored_status == 'failed'
if not (live or stored_status == 'completed' or stored_status == 'compensated') then
  if redis.call('EXISTS', record) == 0 then
    return {'missing'}
  end
  return {'corrupt', record}
end
if token == ARGV[9] then
  return 0  -- this very write, retried by the client after a lost reply
end
if not live then
  return {'finished', stored_status}
end
-- Versions are written in one canonical form (int() here, str(int) by the client).
if version ~= ARGV[6] then
  return {'conflict', version}
end
local status, at, error_text = ARGV[7], 11, nil
if ARGV[10] == '1' then
  error_text, at = ARGV[11], 12
end
local terminal = status == 'completed' or status == 'compensated'
local is_parked = flags == '1' or flags == '3'
local last = #ARGV
local entries = last >= at
-- Keys the script does not write first are checked before the first write; the journal is
-- checked by its append when there are entries to append (see below).
local err = (not entries and expect(journal, 'LLEN')) or (terminal and expect(KEYS[5], 'ZCARD'))
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
  index = KEYS[4]
end
local done
if terminal and not is_parked then
  done = redis.pcall('ZREM', index, id)
else
  done = redis.pcall('ZADD', index, stamp, id)
end
if type(done) == 'table' then
  return refused(done, index)
end
if entries then
  -- As append_journal(). A journal of another type fails the first RPUSH, which writes
  -- nothing; the index entry is then put back as it was (its score is the stored update
  -- time, as every script writes both together).
  local length = redis.pcall('RPUSH', journal, unpack(ARGV, at, math.min(at + 999, last)))
  if type(length) == 'table' then
    redis.call('ZADD', index, stored_updated, id)
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
-- As head_text(): the lease is released by a terminal status or an empty owner.
local new_owner, until_text = ARGV[4], ''
if terminal or new_owner == '' then
  new_owner = ''
else
  until_text = int(now + tonumber(ARGV[5]))
end
local new_flags = 0
if is_parked then
  new_flags = 1
end
local new_head
if error_text then
  new_head = int(tonumber(version) + 1) .. ' ' .. status .. ' ' .. stamp .. ' ' .. until_text
    .. ' ' .. attempts .. ' ' .. (new_flags + 2) .. ' ' .. ARGV[9] .. ' ' .. new_owner
  redis.call('HSET', record, 'head', new_head, 'body', ARGV[8], 'error', error_text)
else
  new_head = int(tonumber(version) + 1) .. ' ' .. status .. ' ' .. stamp .. ' ' .. until_text
    .. ' ' .. attempts .. ' ' .. new_flags .. ' ' .. ARGV[9] .. ' ' .. new_owner
  redis.call('HSET', record, 'head', new_head, 'body', ARGV[8])
  if flags == '2' or flags == '3' then
    redis.call('HDEL', record, 'error')
  end
end
if terminal then
  local finished = KEYS[5]
  redis.call('ZADD', finished, stamp, id)
  local retention = ARGV[2]
  if retention ~= '' then
    redis.call('PEXPIRE', record, retention)
    redis.call('PEXPIRE', journal, retention)
    redis.call('PEXPIRE', finished, retention)
    -- Entries of sagas finished longer ago than the retention time (their records are gone),
    -- dropped at about one finish in ten (a stamp ending in 0): the index stays bounded
    -- without a scan of it on every finish.
    if string.byte(stamp, -1) == 48 then
      redis.call('ZREMRANGEBYSCORE', finished, '-inf',
                 '(' .. int(now - tonumber(retention) * 1000))
    end
  end
end
return 0
""",
    "int",
    "expect",
)

#: KEYS: record, updated index, shard meta.
#: ARGV: saga id, owner, lease µs, write token, shard count, layout version.
CLAIM = _script(
    r"""
local record, updated, meta = KEYS[1], KEYS[2], KEYS[3]
local fresh, err = layout(meta, ARGV[5], ARGV[6])
if err then
  return err
end
local h
h, err = head(record)
if err then
  return err
end
if not h.live then
  return {'finished', h.status}
end
if h.parked then
  return {'parked'}
end
err = expect(updated, 'ZCARD')
if err then
  return err
end
local now = now_us()
if h.owner ~= '' and h.owner ~= ARGV[2] and h.expires and h.expires > now then
  return {'leased', h.owner, int(h.expires)}
end
if fresh then
  redis.call('HSET', meta, 'shards', ARGV[5], 'layout', ARGV[6])
end
take(record, updated, ARGV[1], h, ARGV[2], ARGV[3], ARGV[4], now)
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
#: KEYS: updated index, shard meta, parked index.
#: ARGV: mode ('claim' or 'list'), limit, record key stem, owner, lease µs, write token,
#: shard count, layout version, and optionally the only saga ids to consider...
#: Reply: {'ok', id, fields, id, fields, ...}: the recoverable records (claimed in mode
#: 'claim'), then the members whose record the script cannot read, each with a string in
#: place of its fields: its key's Redis type ('hash' for a hash without a valid head). Those
#: are neither claimed nor counted against the limit, so that one damaged record never fails
#: or fills a scan; the client reports them. The record keys are the stem followed by the
#: id: they share the shard's hash slot, so this stays a single-slot script on a cluster.
#: A member is recoverable when its record is live, not parked, and unleased or its lease
#: (read from the record) has expired; records that are gone or finished are dropped from the
#: index, parked ones moved to the parked index (in mode 'claim').
SCAN = _script(
    r"""
local updated, meta, stem = KEYS[1], KEYS[2], ARGV[3]
local claim = ARGV[1] == 'claim'
local limit = tonumber(ARGV[2])
local fresh, err = layout(meta, ARGV[7], ARGV[8])
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
  local h, bad = head(stem .. id)
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
if #ARGV >= 9 then
  for i = 9, #ARGV do
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
  err = expect(KEYS[3], 'ZCARD')
  if err then
    return err
  end
end
if fresh then
  redis.call('HSET', meta, 'shards', ARGV[7], 'layout', ARGV[8])
end
local reply = {'ok'}
for _, pair in ipairs(chosen) do
  local id, h = pair[1], pair[2]
  if claim then
    take(stem .. id, updated, id, h, ARGV[4], ARGV[5], ARGV[6], now)
  end
  reply[#reply + 1] = id
  reply[#reply + 1] = redis.call('HGETALL', stem .. id)
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
    redis.call('ZADD', KEYS[3], int(pair[2]), pair[1])
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

#: KEYS: record. ARGV: saga id, owner, lease µs.
#: Extends the owner's lease; changes nothing else (not the version, the update time or the
#: write token, so a checkpoint retried after a renewal is still recognised).
RENEW = _script(
    r"""
local record = KEYS[1]
local h, err = head(record)
if err then
  return err
end
if not h.live then
  return {'finished', h.status}
end
if h.owner ~= ARGV[2] then
  return {'notowner', h.owner}
end
redis.call('HSET', record, 'head',
           head_text(h.version, h.status, h.updated, h.owner, now_us() + tonumber(ARGV[3]),
                     h.attempts, h.parked, h.has_error, h.token))
return 0
""",
    "now_us",
    "head",
    "head_text",
)

#: KEYS: record, updated index, parked index.
#: ARGV: saga id, owner, reason, write token.
#: The dead-letter state: parked, the reason as error, no lease, version + 1, out of the
#: recovery index and into the parked one.
PARK = _script(
    r"""
local record, updated, parked, id = KEYS[1], KEYS[2], KEYS[3], ARGV[1]
local h, err = head(record)
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
  return {'notowner', h.owner}
end
err = expect(updated, 'ZCARD') or expect(parked, 'ZCARD')
if err then
  return err
end
local stamp = math.max(now_us(), h.updated + 1)
redis.call('HSET', record, 'head',
           head_text(h.version + 1, h.status, stamp, '', 0, h.attempts, true, true, ARGV[4]),
           'error', ARGV[3])
redis.call('ZREM', updated, id)
redis.call('ZADD', parked, int(stamp), id)
return 0
""",
    "int",
    "now_us",
    "expect",
    "head",
    "head_text",
)

#: KEYS: record, updated index, parked index, finished index. ARGV: saga id.
#: Reply: {'ok', fields}. A saga that is not parked is left as it is.
UNPARK = _script(
    r"""
local record, updated, parked, finished, id = KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1]
local h, err = head(record)
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
  local stamp = math.max(now_us(), h.updated + 1)
  redis.call('HSET', record, 'head',
             head_text(h.version, h.status, stamp, h.owner, h.expires, 0, false, h.has_error,
                       h.token))
  redis.call('ZREM', parked, id)
  redis.call('ZADD', index, int(stamp), id)
end
return {'ok', redis.call('HGETALL', record)}
""",
    "int",
    "now_us",
    "expect",
    "head",
    "head_text",
)

#: One page of one index (updated, parked or finished) of one shard, oldest update first,
#: filtered: what ``list_sagas`` pages through.
#: KEYS: the index, shard meta.
#: ARGV: record key stem, min score (inclusive), offset among the members at that score,
#: max score ('+inf' or '(µs'), page size, matches wanted, status ('' any), name ('' any, else
#: '=' followed by the name), parked ('' any, '1', '0'), shard count, layout version.
#: Reply: {'ok', done (1/0), next min score, next offset, id, fields, id, fields, ...}; a
#: member whose record is a key of another type than a hash has its type (a string) in place
#: of its fields, and is listed only when no filter is given (as a hash with an unreadable
#: head is), so that the client reports it instead of the page failing.
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
  else
    if score == last then
      same = same + 1
    else
      last, same = score, 1
    end
    -- What is unreadable matches no filter: with none, it is returned and its reader
    -- reports it as corrupt.
    local entry = nil
    if found_kind ~= 'hash' then
      if status == '' and name == nil and parked == '' then
        entry = found_kind
      end
    else
      local f = redis.call('HMGET', record, 'head', 'name')
      local head_status, head_flags
      if f[1] then
        head_status, head_flags = string.match(f[1], '^%d+ (%l+) %d+ %d* %d+ (%d) ')
      end
      local is_parked = head_flags == '1' or head_flags == '3'
      if (status == '' or head_status == status) and (name == nil or f[2] == name)
          and (parked == '' or (head_flags and is_parked == (parked == '1'))) then
        entry = redis.call('HGETALL', record)
      end
    end
    if entry then
      reply[#reply + 1] = id
      reply[#reply + 1] = entry
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
