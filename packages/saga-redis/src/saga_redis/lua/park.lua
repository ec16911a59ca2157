-- park: the dead-letter state: parked, the reason as error, no lease, version + 1, out of the
-- recovery indexes (updated, or due and waiting for a WAITING saga) and into the parked one.
-- Reply: 0, or a failure reply.
local record = KEYS[1]
local updated = KEYS[2]
local parked = KEYS[3]
local due = KEYS[4]
local waiting = KEYS[5]
local saga_id = ARGV[1]
local owner = ARGV[2]
local reason = ARGV[3]
local token = ARGV[4]

local h, err = head(record)
if err then
  return err
end
if h.token == token then
  return 0  -- this very write, retried by the client after a lost reply
end
if not h.live then
  return {'finished', h.status}
end
if h.owner ~= owner then
  return {'notowner', h.owner}
end
local waits = in_due(h)
err = expect(parked, 'ZCARD') or (waits and (expect(due, 'ZCARD') or expect(waiting, 'ZCARD')))
  or (not waits and expect(updated, 'ZCARD'))
if err then
  return err
end
local stamp = math.max(now_us(), h.updated + 1)
redis.call('HSET', record, 'head',
           head_text(h.version + 1, h.status, stamp, '', 0, h.attempts, true, true, token,
                     h.cancelled),
           'error', reason)
if waits then
  redis.call('ZREM', due, saga_id)
  redis.call('ZREM', waiting, saga_id)
else
  redis.call('ZREM', updated, saga_id)
end
redis.call('ZADD', parked, int(stamp), saga_id)
return 0
