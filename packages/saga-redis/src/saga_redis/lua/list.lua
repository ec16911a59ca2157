-- list: one page of one index (updated, waiting, parked or finished) of one shard, oldest
-- update first, filtered: what list_sagas pages through. Each record comes with its pending
-- signals (record_fields()). Members whose record is gone (expired,
-- deleted by hand) are removed from the index.
--
-- Reply: {'ok', done (1/0), next min score, next offset, id, fields, id, fields, ...}; a
-- member whose record is a key of another type than a hash has its type (a string) in place
-- of its fields, and is listed only when no filter is given (as a hash with an unreadable
-- head is), so that the client reports it instead of the page failing.
local index_key = KEYS[1]
local meta = KEYS[2]
local record_stem = ARGV[1]
local signals_stem = ARGV[2]
local min_score = ARGV[3]  -- inclusive
local offset = ARGV[4]  -- among the members at min_score
local max_score = ARGV[5]  -- '+inf' or '(µs'
local page_size = ARGV[6]
local wanted = ARGV[7]  -- matches wanted
local status_filter = ARGV[8]  -- '' any
local name_filter = ARGV[9]  -- '' any, else '=' followed by the name
local parked_filter = ARGV[10]  -- '' any, '1', '0'
local owner_filter = ARGV[11]  -- '' any, else the owner the lease names (live or expired)
local shards = ARGV[12]
local layout_version = ARGV[13]

local fresh, err = layout(meta, shards, layout_version)
err = err or expect(index_key, 'ZCARD')
if err then
  return err
end
if fresh then
  redis.call('HSET', meta, 'shards', shards, 'layout', layout_version)
end
page_size, wanted = tonumber(page_size), tonumber(wanted)
local name = nil
if name_filter ~= '' then
  name = string.sub(name_filter, 2)
end
local page = redis.call('ZRANGEBYSCORE', index_key, min_score, max_score, 'WITHSCORES',
                        'LIMIT', offset, page_size)
-- The cursor: the last score seen and how many members still there were seen at it.
local last, same = min_score, tonumber(offset)
local reply = {'ok', 0, '', 0}
local found = 0
local done = #page < 2 * page_size
for i = 1, #page, 2 do
  local id, score = page[i], page[i + 1]
  local record = record_stem .. id
  local found_kind = kind(record)
  if found_kind == 'none' then
    redis.call('ZREM', index_key, id)
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
      if status_filter == '' and name == nil and parked_filter == '' and owner_filter == '' then
        entry = found_kind
      end
    else
      local f = redis.call('HMGET', record, 'head', 'name')
      local head_status, head_flags, head_owner
      if f[1] then
        head_status, head_flags = string.match(f[1], '^%d+ (%l+) %d+ %d* %d+ (%d) ')
        if owner_filter ~= '' then
          head_owner = select(8, string.match(f[1], HEAD_PATTERN))
        end
      end
      local is_parked = head_flags ~= nil and tonumber(head_flags) % 2 == 1
      if (status_filter == '' or head_status == status_filter)
          and (name == nil or f[2] == name)
          and (parked_filter == '' or (head_flags and is_parked == (parked_filter == '1')))
          and (owner_filter == '' or head_owner == owner_filter) then
        entry = record_fields(record, signals_stem .. id)
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
