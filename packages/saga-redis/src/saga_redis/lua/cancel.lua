-- cancel: record the durable decision to cancel a RUNNING or WAITING saga (the first reason
-- wins): the head's cancel flag and the reason; a WAITING saga becomes due now (and is
-- published on the work channel, so an idle worker compensates it at once). Neither the
-- version, the update time nor the write token changes. A saga already cancelled,
-- COMPENSATING or FAILED is left as it is.
-- Reply: {'ok', fields} (record_fields()), or a failure reply.
local record = KEYS[1]
local signals = KEYS[2]
local due = KEYS[3]
local saga_id = ARGV[1]
local reason = ARGV[2]
local channel = ARGV[3]

local h, err = head(record)
if err then
  return err
end
if not h.live then
  return {'finished', h.status}
end
if not h.cancelled and (h.status == 'running' or h.status == 'waiting') then
  err = in_due(h) and expect(due, 'ZCARD')
  if err then
    return err
  end
  redis.call('HSET', record, 'cancel', reason, 'head',
             head_text(h.version, h.status, h.updated, h.owner, h.expires, h.attempts,
                       h.parked, h.has_error, h.token, true))
  if h.status == 'waiting' then
    wake_now(record, due, saga_id, h, now_us())
    notify(channel, saga_id, h)
  end
end
return {'ok', record_fields(record, signals)}
