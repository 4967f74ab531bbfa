-- Set alerts: sets a wallet's thresholds and auto top-up policy, replacing what it had (see
-- load_alerts in events.lua). A threshold already passed waits to be re-armed; a wallet already
-- below its top-up threshold asks for a top-up at once, unless one is open.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream   KEYS[3] partition account set
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] wallet
-- ARGV[4] rules ('below:<minor>' or 'percent:<n>', comma-separated, or '')
-- ARGV[5] top-up policy ('<below>|amount|<minor>' or '<below>|target|<minor>', or '')
-- ARGV[6] '1' to create the account if it is absent (the ledger does not have it either)
-- ARGV[7] the policy as the ledger keeps it (JSON), for the outbox
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} | {'ok', armed, open request, outbox id, entries}
local base, account, wallet = ARGV[1], ARGV[2], ARGV[3]
local rules, top_up = ARGV[4], ARGV[5]

if outbox_full(KEYS[2]) then
  return { 'full' }
end
local now = now_ms()
local entries = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[6] ~= '1' then
    return { 'absent' }
  end
  table.insert(entries, create_account(KEYS[1], KEYS[3], account, now))
end
local w = load_wallet(base, account, wallet, now)
save_wallet(w, {})
with_resets(w, entries)
local key = base .. 'alerts:' .. wallet
local kept = load_alerts(base, wallet)
local open, made = '', 0
if kept then
  open, made = kept.open, kept.made
end
if rules == '' and top_up == '' and open == '' and made == 0 then
  redis.call('DEL', key)
  redis.call('SREM', base .. 'alerts', wallet)
else
  local available, allowance, left = alert_level(w, now)
  local armed = {}
  for i, text in ipairs(split_text(rules, ',')) do
    local kind, n = string.match(text, '^(%a+):(%d+)$')
    local met = rule_met({ kind = kind, n = tonumber(n) }, available, allowance, left)
    armed[i] = met and '0' or '1'
  end
  redis.call('HSET', key, 'rules', rules, 'armed', table.concat(armed), 'top_up', top_up,
    'open', open, 'made', fmt(made))
  redis.call('SADD', base .. 'alerts', wallet)
end
local set = load_alerts(base, wallet)
table.insert(entries, {
  type = 'alerts', account = account, wallet = wallet, alerts = ARGV[7],
  armed = set and armed_text(set) or '', at = fmt(now),
})
local available = wallet_available(w, now)
with_events(entries, wallet_events(base, account, w, now, available, false))
local state = load_alerts(base, wallet)
local armed_now, open_now = '', ''
if state then
  armed_now, open_now = armed_text(state), state.open
end
local outbox_id, entries_text = outbox(KEYS[2], entries, now)
return { 'ok', armed_now, open_now, outbox_id, entries_text }
