-- unpark: take a saga out of the dead-letter state (attempts back to 0, a new update time);
-- a saga that is not parked is left as it is. Reply: {'ok', fields}, or a failure reply.
local record = KEYS[1]
local updated = KEYS[2]
local parked = KEYS[3]
local finished = KEYS[4]
local saga_id = ARGV[1]

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
  redis.call('ZREM', parked, saga_id)
  redis.call('ZADD', index, int(stamp), saga_id)
end
return {'ok', redis.call('HGETALL', record)}
