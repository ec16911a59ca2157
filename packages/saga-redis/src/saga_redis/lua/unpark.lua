-- unpark: take a saga out of the dead-letter state (attempts back to 0, a new update time);
-- a saga that is not parked is left as it is. It goes back to updated, to finished when it
-- finished while parked, or, WAITING, to due (at its wake time) and waiting.
-- Reply: {'ok', fields} (record_fields()), or a failure reply.
local record = KEYS[1]
local updated = KEYS[2]
local parked = KEYS[3]
local finished = KEYS[4]
local signals = KEYS[5]
local due = KEYS[6]
local waiting = KEYS[7]
local saga_id = ARGV[1]

local h, err = head(record)
if err then
  return err
end
if h.parked then
  local index = updated
  local rests = h.status == 'waiting'
  if not h.live then
    index = finished
  elseif rests then
    index = waiting
  end
  err = expect(parked, 'ZCARD') or expect(index, 'ZCARD') or (rests and expect(due, 'ZCARD'))
  if err then
    return err
  end
  local stamp = math.max(now_us(), h.updated + 1)
  redis.call('HSET', record, 'head',
             head_text(h.version, h.status, stamp, h.owner, h.expires, 0, false, h.has_error,
                       h.token, h.cancelled))
  redis.call('ZREM', parked, saga_id)
  redis.call('ZADD', index, int(stamp), saga_id)
  if rests then
    local wake = wait_of(record)
    redis.call('ZADD', due, wake and int(wake) or '+inf', saga_id)
  end
end
return {'ok', record_fields(record, signals)}
