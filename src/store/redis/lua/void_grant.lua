-- Void grant: ends a grant; its unheld remainder stops being spendable at once.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] grant id   ARGV[4] reason
-- ARGV[5] entry id
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} | {'not_found'} |
--        {'ok', voided, grant, wallet, wallet available, now[, outbox id, outbox entries]}
local base, account = ARGV[1], ARGV[2]
local id, reason, entry_id = ARGV[3], ARGV[4], ARGV[5]
if outbox_full(KEYS[2]) then
  return { 'full' }
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 'absent' }
end
local now = now_ms()
for _, wallet in ipairs(redis.call('SMEMBERS', base .. 'wallets')) do
  local grants_key = base .. 'grants:' .. wallet
  local text = redis.call('HGET', grants_key, id)
  if text then
    local w = load_wallet(base, account, wallet, now)
    local g = w.by_id[id]
    if g.voided ~= nil then
      return { 'ok', '0', text, wallet, fmt(wallet_available(w, now)), fmt(now) }
    end
    local wallet_before = wallet_available(w, now)
    local voided = spendable(g)
    g.remaining = g.remaining - voided
    g.voided = now
    text = encode_grant(g)
    save_wallet(w, {})
    redis.call('HSET', grants_key, id, text)
    local events = wallet_events(base, account, w, now, wallet_before, false)
    local entries = with_resets(w, { {
      type = 'void',
      entry = {
        id = entry_id, kind = 'void', account = account, wallet = wallet, amount = fmt(voided),
        split = id .. '=' .. fmt(voided), grant = id, reason = reason, at = fmt(now),
      },
    } })
    local outbox_id, entries_text = outbox(KEYS[2], with_events(entries, events), now)
    return { 'ok', fmt(voided), text, wallet, fmt(wallet_available(w, now)), fmt(now),
      outbox_id, entries_text }
  end
end
return { 'not_found' }
