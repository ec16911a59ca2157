-- read: a saga's record (with its pending signals, see record_fields()) or its journal. A
-- record hash is never empty, so an empty one means there is none.
-- Reply: {'ok', fields or entries}, or a failure reply.
local record = KEYS[1]
local journal = KEYS[2]
local signals = KEYS[3]
local what = ARGV[1]  -- 'record' or 'journal'

if what == 'journal' then
  local fields = redis.pcall('HLEN', record)
  if type(fields) == 'table' then
    return refused(fields, record)
  end
  if fields == 0 then
    return {'missing'}
  end
  local items = redis.pcall('LRANGE', journal, 0, -1)
  if items.err then
    return refused(items, journal)
  end
  return {'ok', items}
end
local fields = redis.pcall('HLEN', record)
if type(fields) == 'table' then
  return refused(fields, record)
end
if fields == 0 then
  return {'missing'}
end
return {'ok', record_fields(record, signals)}
