-- Commit: charges `amount` of a hold and releases the rest; an amount above the hold is
-- charged as the hold's overrun policy says.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream   KEYS[3] partition expiry set
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] retention (ms)
-- ARGV[4] token   ARGV[5] amount   ARGV[6] entry id   ARGV[7] usage (JSON or '')
-- ARGV[8] model of the usage (or '')
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} | {'not_found'} | {'ended', state} |
--        {'mismatch', committed} | {'too_large'} debt beyond the money bound |
--        {'ok', reply, outbox id, outbox entries} (a repeated commit: {'ok', reply})
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
  local requested = h.c_requested or h.c_charged
  if requested == fmt(amount) then
    return { 'ok', h.c_reply }
  end
  return { 'mismatch', requested }
end
if h.state ~= 'held' then
  return { 'ended', h.state }
end

local w = load_wallet(base, account, h.wallet, now)
local wallet_before = wallet_available(w, now)
local over = math.max(0, amount - h.amount_n)
local charged, released = settle(h.split_t, amount - over)
adjust_held(w, h.split_t, -1)
take_remaining(w, charged)
local extra = {}
if over > 0 then
  -- Judged on the wallet without this hold: its own credit is charged in full first.
  local policy, wanted = h.overrun or '', 0
  if policy == 'charge_actual' then
    wanted = over
  elseif string.sub(policy, 1, 12) == 'allow_up_to:' then
    wanted = math.min(over, minor(string.sub(policy, 13), 'overrun allowance'))
  end
  local payable = math.min(wanted, available_for(w, h.feature, now))
  extra = plan_draw(w, h.feature, now, payable)
  take_remaining(w, extra)
  if policy == 'charge_actual' and wanted > payable then
    if w.pp.debt + wanted - payable > MINOR_MAX then
      return { 'too_large' }
    end
    table.insert(extra, { DEBT, wanted - payable })
    w.pp.debt = w.pp.debt + wanted - payable
  end
  merge_split(charged, extra)
end
local charged_total = 0
for _, p in ipairs(charged) do
  charged_total = charged_total + p[2]
end
settle_limits(base, h, h.amount_n, charged_total, now)
local voids = void_released(account, token, h.wallet, w.by_id, released, now)
save_wallet(w, h.split_t)
save_wallet(w, extra)
local events = wallet_events(base, account, w, now, wallet_before, false)
local available = available_for(w, h.feature, now)
local released_total = h.amount_n - (amount - over)
local reply = cjson.encode({
  token = token, entry_id = entry_id, requested = fmt(amount), overrun = fmt(over),
  charged = fmt(charged_total), released = fmt(released_total), split = encode_split(charged),
  available = fmt(available),
})
h.state = 'committed'
h.version = next_version(h)
h.c_entry = entry_id
h.c_requested = fmt(amount)
h.c_overrun = fmt(over)
h.c_charged = fmt(charged_total)
h.c_released = fmt(released_total)
h.c_split = encode_split(charged)
h.c_available = fmt(available)
h.c_at = fmt(now)
h.c_reply = reply
redis.call('HSET', hold_key, 'state', h.state, 'version', h.version, 'c_entry', h.c_entry,
  'c_requested', h.c_requested, 'c_overrun', h.c_overrun, 'c_charged', h.c_charged,
  'c_released', h.c_released, 'c_split', h.c_split, 'c_available', h.c_available,
  'c_at', h.c_at, 'c_reply', reply)
redis.call('PEXPIRE', hold_key, fmt(retention))
redis.call('SREM', base .. 'holds', token)
redis.call('ZREM', KEYS[3], account .. '/' .. token)

if model == '' then
  model = h.model
end
local entries = with_resets(w, { {
  type = 'charge',
  entry = {
    id = entry_id, kind = 'commit', account = account, wallet = h.wallet, feature = h.feature,
    model = model, usage = usage, amount = fmt(charged_total), split = encode_split(charged),
    overrun = fmt(over),
    reservation = account .. '/' .. token, idem = h.idem, labels = h.labels, at = fmt(now),
  },
} })
for _, v in ipairs(voids) do
  table.insert(entries, v)
end
table.insert(entries, hold_entry(account, token, h))
local id, entries_text = outbox(KEYS[2], with_events(entries, events), now)
return { 'ok', reply, id, entries_text }
