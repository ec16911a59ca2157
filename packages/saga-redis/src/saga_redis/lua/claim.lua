-- claim: lease one recoverable saga (or one already leased to the caller) to `owner`; with
-- `force`, whoever holds its lease (a takeover: otherwise the same claim).
-- A claimed WAITING saga stays WAITING, leased, in due at its wake time: it is found there
-- again once its lease expires. A claim of one saga does not require it due.
-- Reply: {'ok', fields} (record_fields() after the claim), or a failure reply.
local record = KEYS[1]
local updated = KEYS[2]
local meta = KEYS[3]
local signals = KEYS[4]
local due = KEYS[5]
local waiting = KEYS[6]
local saga_id = ARGV[1]
local owner = ARGV[2]
local lease_us = ARGV[3]
local token = ARGV[4]
local shards = ARGV[5]
local layout_version = ARGV[6]
local force = ARGV[7]  -- '1': take a live lease of another owner too

local fresh, err = layout(meta, shards, layout_version)
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
local index = updated
if in_due(h) then
  index = waiting
end
err = expect(index, 'ZCARD')
if err then
  return err
end
local now = now_us()
if force ~= '1' and h.owner ~= '' and h.owner ~= owner and h.expires and h.expires > now then
  return {'leased', h.owner, int(h.expires)}
end
if fresh then
  redis.call('HSET', meta, 'shards', shards, 'layout', layout_version)
end
take(record, index, saga_id, h, owner, lease_us, token, now)
return {'ok', record_fields(record, signals)}
