-- deliver: store a signal for a saga, at most once per signal id (pending or consumed, checked
-- first), while the saga accepts it: RUNNING or WAITING, no cancel requested, not past the wait
-- (its cursor below wait_cursor, or at it with next_step wait_step), and no signal of this name
-- pending already. A WAITING saga waiting for
-- this name becomes due now, and is published on the work channel (so an idle worker resumes
-- it at once). Neither the version nor the update time changes.
-- Reply: 1 (stored), 0 (a duplicate: nothing written), or a failure reply.
local record = KEYS[1]
local signals = KEYS[2]
local due = KEYS[3]
local saga_id = ARGV[1]
local signal_id = ARGV[2]
local name = ARGV[3]  -- a JSON string
local payload = ARGV[4]
local wait_cursor = ARGV[5]
local wait_step = ARGV[6]  -- a JSON string, as the body's second line holds the next step
local token = ARGV[7]
local channel = ARGV[8]

local h, err = head(record)
if err then
  return err
end
-- The duplicate check comes first: a retried delivery is a no-op even once the saga finished.
local known = redis.pcall('HGET', signals, signal_id)
if type(known) == 'table' then
  return refused(known, signals)
end
if known then
  -- This very delivery, retried by the client after a lost reply, was stored by it.
  if string.match(known, '^%d+ %d+ (%S+) ') == token then
    return 1
  end
  return 0
end
if not h.live then
  return {'finished', h.status}
end
if h.cancelled or not (h.status == 'running' or h.status == 'waiting') then
  return {'refused', 'rollback', h.cancelled and 'cancelled' or h.status}
end
local cursor, next_step = string.match(redis.call('HGET', record, 'body') or '',
                                       '^(%d+)\n([^\n]*)\n')
cursor = tonumber(cursor)
if cursor == nil then
  return {'corrupt', record}
end
if cursor > tonumber(wait_cursor) or (cursor == tonumber(wait_cursor) and next_step ~= wait_step)
    then
  return {'refused', 'past', ''}
end
-- A wait takes one signal: a second of this name while one is pending could never be consumed.
local stored = redis.call('HGETALL', signals)
for i = 2, #stored, 2 do
  local pending_name = string.match(stored[i], '^%d+ %d+ %S+ ([^\n]*)\n')
  if pending_name == name then
    return {'refused', 'pending', stored[i - 1]}
  end
end
err = in_due(h) and expect(due, 'ZCARD')
if err then
  return err
end
local now = now_us()
redis.call('HSET', signals, signal_id, redis.call('HLEN', signals) .. ' ' .. int(now) .. ' '
           .. token .. ' ' .. name .. '\n' .. payload)
if h.status == 'waiting' then
  local _, waits_for = wait_of(record)
  if waits_for == name then
    wake_now(record, due, saga_id, h, now)
    notify(channel, saga_id, h)
  end
end
return 1
