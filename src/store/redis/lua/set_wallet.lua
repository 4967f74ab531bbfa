-- Set wallet: sets a wallet's flex cap (0 turns flex off). Flex already used stays used.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream   KEYS[3] partition account set
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] wallet   ARGV[4] flex cap
-- ARGV[5] '1' to create the account if it is absent (the ledger does not have it either)
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} | {'too_large'} grants and cap above the bound |
--        {'ok', postpaid (cap|used|held|debt)[, outbox id, outbox entries]}
local base, account, wallet = ARGV[1], ARGV[2], ARGV[3]
local cap = minor(ARGV[4], 'flex cap')

if outbox_full(KEYS[2]) then
  return { 'full' }
end
local now = now_ms()
local entries = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[5] ~= '1' then
    return { 'absent' }
  end
  table.insert(entries, create_account(KEYS[1], KEYS[3], account, now))
end
local w = load_wallet(base, account, wallet, now)
if w.pp.cap == cap and #entries == 0 then
  return { 'ok', encode_postpaid(w.pp) }
end
if wallet_bound(w, now) - w.pp.cap + cap > MINOR_MAX then
  return { 'too_large' }
end
local wallet_before = wallet_available(w, now)
w.pp.cap = cap
save_wallet(w, {})
redis.call('SADD', base .. 'wallets', wallet)
local events = wallet_events(base, account, w, now, wallet_before, true)
with_resets(w, entries)
table.insert(entries, {
  type = 'wallet', account = account, wallet = wallet, flex_cap = fmt(cap), at = fmt(now),
})
local outbox_id, entries_text = outbox(KEYS[2], with_events(entries, events), now)
return { 'ok', encode_postpaid(w.pp), outbox_id, entries_text }
