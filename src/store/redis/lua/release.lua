-- Release: ends a hold without charging.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream   KEYS[3] partition expiry set
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] retention (ms)   ARGV[4] token
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} | {'not_found'} | {'ended', state} |
--        {'ok', reply, outbox id, outbox entries} (a repeated release:
--        {'ok', reply, '', '', hold version})
local base, account = ARGV[1], ARGV[2]
local retention = minor(ARGV[3], 'retention')
local token = ARGV[4]

if outbox_full(KEYS[2]) then
  return { 'full' }
end
local hold_key = base .. 'hold:' .. token
local h = load_hold(hold_key)
if h == nil then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return { 'absent' }
  end
  return { 'not_found' }
end
local now = now_ms()
if expire_if_due(base, account, token, hold_key, h, KEYS[2], KEYS[3], now, retention) then
  return { 'ended', 'expired' }
end
local function reply_of(hold)
  return cjson.encode({ token = token, released = hold.r_released, available = hold.r_available })
end
if h.state == 'released' then
  -- A repeat: the hold's version tells the caller what the ledger must have caught up to.
  return { 'ok', reply_of(h), '', '', h.version or '0' }
end
if h.state ~= 'held' then
  return { 'ended', h.state }
end
local entries = end_uncharged(base, account, token, hold_key, h, 'released', KEYS[3], now,
  retention)
local id, entries_text = outbox(KEYS[2], entries, now)
return { 'ok', reply_of(h), id, entries_text }
