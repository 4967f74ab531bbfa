-- Reserve: sets aside `amount` of a wallet for a feature, as a new hold.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream   KEYS[3] partition expiry set
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] retention (ms)
-- ARGV[4] token   ARGV[5] wallet   ARGV[6] feature   ARGV[7] amount   ARGV[8] ttl (ms)
-- ARGV[9] labels (JSON)   ARGV[10] price (JSON or '')   ARGV[11] model (or '')
-- ARGV[12] idempotency key (or '')   ARGV[13] request fingerprint
-- ARGV[14] least amount of a partial hold (equal to the amount for all or nothing)
-- ARGV[15] overrun policy ('cap_at_hold', 'allow_up_to:<allowance>' or 'charge_actual')
-- ARGV[16] stop rule ('finish_running' or 'stop_running')
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} account not loaded | {'conflict'} key reused | {'replay', reply} |
--        {'denied', reason, available[, spend limit]} |
--        {'ok', reply, outbox id, outbox entries ('' unless it reset an allowance),
--         '1' if it reset an allowance else '0'}
local base, account = ARGV[1], ARGV[2]
local retention = minor(ARGV[3], 'retention')
local token, wallet, feature = ARGV[4], ARGV[5], ARGV[6]
local amount = minor(ARGV[7], 'amount')
local min_amount = minor(ARGV[14], 'minimum')
local ttl = ttl_ms(ARGV[8])
local key, fingerprint = ARGV[12], ARGV[13]

local early, spend = begin_spending(KEYS[1], KEYS[2], base, account, wallet, feature, key,
  fingerprint)
if early then
  return early
end
local now, w = spend.now, spend.w
local available, idem_key = spend.available, spend.idem_key
local limits = load_limits(base, now)
local labels = cjson.decode(ARGV[9])
local capped, limit_id, room = limit_cap(limits, labels, amount, min_amount)
if not capped then
  return { 'denied', 'spend_limit_reached', fmt(room), limit_id }
end
amount, min_amount = capped, math.min(min_amount, capped)
local split, reason, shortfall = plan_draw(w, feature, now, amount)
if not split and reason == 'insufficient_credits' and shortfall > 0 and shortfall >= min_amount
then
  -- A partial hold takes what is left, down to its minimum.
  amount = shortfall
  split, reason, shortfall = plan_draw(w, feature, now, amount)
end
if not split then
  return { 'denied', reason, fmt(shortfall) }
end

local wallet_before, rooms = wallet_available(w, now), limit_rooms(limits)
adjust_held(w, split, 1)
save_wallet(w, split)
local limit_ids = hold_limits(limits, labels, amount)
save_limits(base, limits)
local events = wallet_events(base, account, w, now, wallet_before, false, limits, rooms)
local expires = now + ttl
local hold = {
  wallet = wallet, feature = feature, amount = fmt(amount), split = encode_split(split),
  created = fmt(now), expires = fmt(expires), state = 'held', version = '1', labels = ARGV[9],
  price = ARGV[10], model = ARGV[11], idem = key, overrun = ARGV[15], stop = ARGV[16],
  limits = limit_ids,
}
local fields = {}
for k, v in pairs(hold) do
  fields[#fields + 1] = k
  fields[#fields + 1] = v
end
redis.call('HSET', base .. 'hold:' .. token, unpack(fields))
redis.call('SADD', base .. 'holds', token)
redis.call('ZADD', KEYS[3], fmt(expires), account .. '/' .. token)
local reply = cjson.encode({
  token = token, wallet = wallet, amount = fmt(amount), expires = fmt(expires),
  split = encode_split(split), available = fmt(available - amount),
})
local reset = #w.resets > 0 and '1' or '0'
local entries = with_resets(w, { { type = 'hold', account = account, token = token, hold = hold } })
if key ~= '' then
  remember(idem_key, fingerprint, reply, now, retention)
  table.insert(entries, {
    type = 'remember', account = account, key = key, fingerprint = fingerprint,
    reply_kind = 'reserve', reply = reply, at = fmt(now),
  })
end
local id, entries_text = outbox(KEYS[2], with_events(entries, events), now)
-- The caller reads the record only when the hold reset an allowance (see reserve.rs).
return { 'ok', reply, id, reset == '1' and entries_text or '', reset }
