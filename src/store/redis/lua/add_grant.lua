-- Add grant: adds a lot of credits to a wallet. Idempotent by grant id. An unscoped grant pays
-- the wallet's debt first.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream   KEYS[3] partition account set
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] grant id   ARGV[4] wallet
-- ARGV[5] kind   ARGV[6] priority   ARGV[7] amount   ARGV[8] expiry (ms, or '')
-- ARGV[9] features (comma-separated, or '')   ARGV[10] entry id   ARGV[11] most active grants
-- ARGV[12] '1' to create the account if it is absent (the ledger does not have it either)
-- ARGV[13] recurrence: '' or "month|year,anchor (or ''),rollover max"
-- ARGV[14] reason of the grant's ledger entry (or '')   ARGV[15] entry it refunds (or '')
-- ARGV[16] top-up request it answers, which it closes if it is the open one (or '')
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} | {'conflict'} | {'too_many'} | {'too_large'} |
--        {'ok', created (0 or 1), grant, wallet available, now, outbox id, outbox entries}
local base, account = ARGV[1], ARGV[2]
local id, wallet, kind = ARGV[3], ARGV[4], ARGV[5]
local priority = minor(ARGV[6], 'priority')
local amount = minor(ARGV[7], 'amount')
local expires = nil
if ARGV[8] ~= '' then
  expires = minor(ARGV[8], 'expiry')
end
local features, entry_id = ARGV[9], ARGV[10]
local grants_max = minor(ARGV[11], 'grant limit')
local recur = ARGV[13]

if outbox_full(KEYS[2]) then
  return { 'full' }
end
local now = now_ms()
local entries = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[12] ~= '1' then
    return { 'absent' }
  end
end
local grants_key = base .. 'grants:' .. wallet
for _, other in ipairs(redis.call('SMEMBERS', base .. 'wallets')) do
  local text = redis.call('HGET', base .. 'grants:' .. other, id)
  if text then
    local g = decode_grant(id, text)
    local same = other == wallet and g.kind == kind and g.priority == priority
      and g.amount == amount and g.expires == expires and g.features_text == features
      and g.recur_text == recur
    if not same then
      return { 'conflict' }
    end
    -- As it is now (reset if due), though nothing is written.
    local w = load_wallet(base, account, wallet, now)
    return { 'ok', 0, encode_grant(w.by_id[id]), fmt(wallet_available(w, now)), fmt(now) }
  end
end
local w = load_wallet(base, account, wallet, now)
local count = 0
for _, g in ipairs(w.grants) do
  if active(g, now) then
    count = count + 1
  end
end
if count >= grants_max then
  return { 'too_many' }
end
local own_bound = amount
if recur ~= '' then
  own_bound = 2 * (amount + tonumber(split_text(recur, ',')[3]))
end
if wallet_bound(w, now) + own_bound > MINOR_MAX then
  return { 'too_large' }
end

if redis.call('EXISTS', KEYS[1]) == 0 then
  table.insert(entries, create_account(KEYS[1], KEYS[3], account, now))
end
local g = decode_grant(id, encode_grant({
  kind = kind, priority = priority, amount = amount, remaining = amount, held = 0,
  expires = expires, created = now, voided = nil, recur_text = recur, pindex = 0,
  features_text = features,
}))
if g.period then
  g.pindex = period_index_at(g.period, g.anchor or now, now)
  g.pgranted = amount
end
local grant_entry = {
  type = 'grant', account = account, wallet = wallet, grant_id = id, grant = encode_grant(g),
  entry = {
    id = entry_id, kind = 'grant', account = account, wallet = wallet, amount = fmt(amount),
    grant = id, reason = ARGV[14], refund_of = ARGV[15], at = fmt(now),
  },
  answers = '',
}
table.insert(entries, grant_entry)
local wallet_before = wallet_available(w, now)
local repaid = math.min(w.pp.debt, amount)
if repaid > 0 and features == '' and (expires == nil or expires > now) then
  g.remaining = amount - repaid
  w.pp.debt = w.pp.debt - repaid
  table.insert(entries, {
    type = 'charge',
    entry = {
      id = entry_id_repay(account, id), kind = 'charge', account = account,
      wallet = wallet, amount = fmt(repaid), split = id .. '=' .. fmt(repaid), grant = DEBT,
      reason = 'pays the debt left by an overrun charged in full', at = fmt(now),
    },
  })
end
save_wallet(w, {})
with_resets(w, entries)
local text = encode_grant(g)
redis.call('HSET', grants_key, id, text)
redis.call('SADD', base .. 'wallets', wallet)
table.insert(w.grants, g)
-- Only the open request is closed, and only that one is recorded as answered.
local alerts = load_alerts(base, wallet)
if alerts and ARGV[16] ~= '' and alerts.open == ARGV[16] then
  alerts.open = ''
  save_alert_state(alerts)
  grant_entry.answers = ARGV[16]
end
local outbox_id, entries_text = outbox(KEYS[2], with_events(entries,
  wallet_events(base, account, w, now, wallet_before, true)), now)
return { 'ok', 1, text, fmt(wallet_available(w, now)), fmt(now), outbox_id,
  entries_text }
