-- Charge: debits `amount` of a wallet in one step.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] retention (ms)
-- ARGV[4] wallet   ARGV[5] feature   ARGV[6] amount   ARGV[7] entry id   ARGV[8] labels (JSON)
-- ARGV[9] usage (JSON or '')   ARGV[10] model (or '')   ARGV[11] idempotency key (or '')
-- ARGV[12] request fingerprint
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} | {'conflict'} | {'replay', reply} | {'denied', reason, available[, limit]} |
--        {'ok', reply, outbox id, outbox entries}
local base, account = ARGV[1], ARGV[2]
local retention = minor(ARGV[3], 'retention')
local wallet, feature = ARGV[4], ARGV[5]
local amount = minor(ARGV[6], 'amount')
local entry_id = ARGV[7]
local key, fingerprint = ARGV[11], ARGV[12]

local early, spend = begin_spending(KEYS[1], KEYS[2], base, account, wallet, feature, key,
  fingerprint)
if early then
  return early
end
local now, w = spend.now, spend.w
local available, idem_key = spend.available, spend.idem_key
local limits = load_limits(base, now)
local labels = cjson.decode(ARGV[8])
local capped, limit_id, room = limit_cap(limits, labels, amount, amount)
if not capped then
  return { 'denied', 'spend_limit_reached', fmt(room), limit_id }
end
local split, reason, shortfall = plan_draw(w, feature, now, amount)
if not split then
  return { 'denied', reason, fmt(shortfall) }
end

local wallet_before, rooms = wallet_available(w, now), limit_rooms(limits)
take_remaining(w, split)
save_wallet(w, split)
for _, l in ipairs(limits) do
  if limit_applies(l, labels) then
    l.used = l.used + amount
  end
end
save_limits(base, limits)
local events = wallet_events(base, account, w, now, wallet_before, false, limits, rooms)
local reply = cjson.encode({
  entry_id = entry_id, wallet = wallet, charged = fmt(amount), split = encode_split(split),
  available = fmt(available - amount),
})
local entries = with_resets(w, { {
  type = 'charge',
  entry = {
    id = entry_id, kind = 'charge', account = account, wallet = wallet, feature = feature,
    model = ARGV[10], usage = ARGV[9], amount = fmt(amount), split = encode_split(split),
    idem = key, labels = ARGV[8], at = fmt(now),
  },
} })
if key ~= '' then
  remember(idem_key, fingerprint, reply, now, retention)
  table.insert(entries, {
    type = 'remember', account = account, key = key, fingerprint = fingerprint,
    reply_kind = 'charge', reply = reply, at = fmt(now),
  })
end
local id, entries_text = outbox(KEYS[2], with_events(entries, events), now)
return { 'ok', reply, id, entries_text }
