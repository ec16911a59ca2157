-- renew: extend the owner's lease; nothing else changes (not the version, the update time or
-- the write token, so a checkpoint retried after a renewal is still recognised).
-- Reply: 0, or a failure reply.
local record = KEYS[1]
local owner = ARGV[1]
local lease_us = ARGV[2]

local h, err = head(record)
if err then
  return err
end
if not h.live then
  return {'finished', h.status}
end
if h.owner ~= owner then
  return {'notowner', h.owner}
end
redis.call('HSET', record, 'head',
           head_text(h.version, h.status, h.updated, h.owner, now_us() + tonumber(lease_us),
                     h.attempts, h.parked, h.has_error, h.token, h.cancelled))
return 0
