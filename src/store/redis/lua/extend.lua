-- Extend: adds to a hold and/or moves its expiry later.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream   KEYS[3] partition expiry set
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] retention (ms)
-- ARGV[4] token   ARGV[5] additional amount   ARGV[6] new ttl (ms, or '' to keep the expiry)
-- ARGV[7] idempotency key (or '')   ARGV[8] request fingerprint
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} | {'not_found'} | {'ended', state} | {'conflict'} |
--        {'replay', reply, hold version} |
--        {'denied', reason, available[, spend limit]} | {'ok', reply, outbox id, outbox entries}
local base, account = ARGV[1], ARGV[2]
local retention = minor(ARGV[3], 'retention')
local token = ARGV[4]
local additional = minor(ARGV[5], 'additional amount')
local ttl = nil
if ARGV[6] ~= '' then
  ttl = ttl_ms(ARGV[6])
end
local key, fingerprint = ARGV[7], ARGV[8]

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
-- As in the in-process store: a due hold is expired first, but a repeated extend still gets
-- its first reply.
expire_if_due(base, account, token, hold_key, h, KEYS[2], KEYS[3], now, retention)
local idem_key = base .. 'idem:' .. key
if key ~= '' then
  local kept = recall(idem_key, fingerprint)
  if kept then
    -- A repeat also names the hold's version, which the ledger must have caught up to.
    table.insert(kept, h.version or '0')
    return kept
  end
end
if h.state ~= 'held' then
  return { 'ended', h.state }
end
local w = load_wallet(base, account, h.wallet, now)
local available = available_for(w, h.feature, now)
if redis.call('HGET', KEYS[1], 'status') == 'suspended' then
  return { 'denied', 'account_suspended', fmt(available) }
end
if h.stop == 'stop_running' and available <= 0 then
  -- The feature's work stops when its wallet runs out, however much is still held.
  return { 'denied', 'insufficient_credits', fmt(available) }
end
local limits = load_limits(base, now)
local mine = hold_limit_set(h, limits)
local tightest, room = tightest_limit(limits, function(l) return mine[l.id] end)
if tightest and room < additional then
  return { 'denied', 'spend_limit_reached', fmt(room), tightest.id }
end
local extra, reason, shortfall = plan_draw(w, h.feature, now, additional)
if not extra then
  return { 'denied', reason, fmt(shortfall) }
end
if h.amount_n + additional > MINOR_MAX then
  error('creditgate: hold above the money bound')
end

local wallet_before, rooms = wallet_available(w, now), limit_rooms(limits)
adjust_held(w, extra, 1)
save_wallet(w, extra)
for _, l in ipairs(limits) do
  if mine[l.id] then
    l.held = l.held + additional
  end
end
save_limits(base, limits)
local events = wallet_events(base, account, w, now, wallet_before, false, limits, rooms)
local merged = merge_split(h.split_t, extra)
h.amount = fmt(h.amount_n + additional)
h.split = encode_split(merged)
if ttl ~= nil and now + ttl > h.expires_n then
  h.expires = fmt(now + ttl)
  redis.call('ZADD', KEYS[3], fmt(now + ttl), account .. '/' .. token)
end
h.version = next_version(h)
redis.call('HSET', hold_key, 'amount', h.amount, 'split', h.split, 'expires', h.expires,
  'version', h.version)
local reply = cjson.encode({
  token = token, amount = h.amount, expires = h.expires, split = h.split,
  available = fmt(available - additional),
})
local entries = with_resets(w, { hold_entry(account, token, h) })
if key ~= '' then
  remember(idem_key, fingerprint, reply, now, retention)
  table.insert(entries, {
    type = 'remember', account = account, key = key, fingerprint = fingerprint,
    reply_kind = 'extend', reply = reply, at = fmt(now),
  })
end
local id, entries_text = outbox(KEYS[2], with_events(entries, events), now)
return { 'ok', reply, id, entries_text }
