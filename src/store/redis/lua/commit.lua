-- Commit: charges `amount` of a hold and releases the rest.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream   KEYS[3] partition expiry set
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] retention (ms)
-- ARGV[4] token   ARGV[5] amount   ARGV[6] entry id   ARGV[7] usage (JSON or '')
-- ARGV[8] model of the usage (or '')
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} | {'not_found'} | {'ended', state} | {'mismatch', committed} |
--        {'exceeds', held} | {'ok', reply, outbox id, outbox entries} (a repeated commit:
--        {'ok', reply})
local base, account = ARGV[1], ARGV[2]
local retention = minor(ARGV[3], 'retention')
local token = ARGV[4]
local amount = minor(ARGV[5], 'amount')
local entry_id, usage, model = ARGV[6], ARGV[7], ARGV[8]

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
if h.state == 'committed' then
  if h.c_charged == fmt(amount) then
    return { 'ok', h.c_reply }
  end
  return { 'mismatch', h.c_charged }
end
if h.state ~= 'held' then
  return { 'ended', h.state }
end
if amount > h.amount_n then
  return { 'exceeds', h.amount }
end

local grants_key = base .. 'grants:' .. h.wallet
local grants, by_id = load_grants(grants_key)
local charged, released = settle(h.split_t, amount)
local wallet_before = wallet_available(grants, now)
adjust_held(by_id, h.split_t, -1)
for _, p in ipairs(charged) do
  local g = by_id[p[1]]
  g.remaining = g.remaining - p[2]
end
local voids = void_released(account, token, h.wallet, by_id, released, now)
save_grants(grants_key, by_id, h.split_t)
publish_crossing(base, account, h.wallet, wallet_before, wallet_available(grants, now), now)
local available = available_for(grants, h.feature, now)
local reply = cjson.encode({
  token = token, entry_id = entry_id, charged = fmt(amount),
  released = fmt(h.amount_n - amount), split = encode_split(charged), available = fmt(available),
})
h.state = 'committed'
h.version = next_version(h)
h.c_entry = entry_id
h.c_charged = fmt(amount)
h.c_released = fmt(h.amount_n - amount)
h.c_split = encode_split(charged)
h.c_available = fmt(available)
h.c_at = fmt(now)
h.c_reply = reply
redis.call('HSET', hold_key, 'state', h.state, 'version', h.version, 'c_entry', h.c_entry,
  'c_charged', h.c_charged,
  'c_released', h.c_released, 'c_split', h.c_split, 'c_available', h.c_available,
  'c_at', h.c_at, 'c_reply', reply)
redis.call('PEXPIRE', hold_key, fmt(retention))
redis.call('SREM', base .. 'holds', token)
redis.call('ZREM', KEYS[3], account .. '/' .. token)

if model == '' then
  model = h.model
end
local entries = { {
  type = 'charge',
  entry = {
    id = entry_id, kind = 'commit', account = account, wallet = h.wallet, feature = h.feature,
    model = model, usage = usage, amount = fmt(amount), split = encode_split(charged),
    reservation = account .. '/' .. token, idem = h.idem, labels = h.labels, at = fmt(now),
  },
} }
for _, v in ipairs(voids) do
  table.insert(entries, v)
end
table.insert(entries, hold_entry(account, token, h))
local id = outbox(KEYS[2], entries, now)
return { 'ok', reply, id, cjson.encode(entries) }
