-- Snapshot: an account's fields, every grant of every wallet, and its open holds, read at one
-- instant. Changes nothing.
--
-- KEYS[1] account hash   ARGV[1] account key base
-- Reply: {'absent'} when the account is absent (the caller then loads it from the ledger),
--        else {JSON: {"account": {...}, "now", "grants": [{"id", "wallet", "grant"}],
--        "holds": [{"token", "hold"}], "postpaid": [{"wallet", "postpaid"}],
--        "limits": [{"id", "limit"}],
--        "alerts": [{"wallet", "rules", "armed", "top_up", "open", "made"}]}}
local base = ARGV[1]
local acct = hash_to_table(redis.call('HGETALL', KEYS[1]))
if acct.status == nil then
  return { 'absent' }
end
local grants, holds = {}, {}
for _, wallet in ipairs(redis.call('SMEMBERS', base .. 'wallets')) do
  local flat = redis.call('HGETALL', base .. 'grants:' .. wallet)
  for i = 1, #flat, 2 do
    table.insert(grants, { id = flat[i], wallet = wallet, grant = flat[i + 1] })
  end
end
for _, token in ipairs(redis.call('SMEMBERS', base .. 'holds')) do
  local h = hash_to_table(redis.call('HGETALL', base .. 'hold:' .. token))
  if h.state ~= nil then
    table.insert(holds, { token = token, hold = h })
  end
end
local postpaid = {}
local flat = redis.call('HGETALL', base .. 'postpaid')
for i = 1, #flat, 2 do
  table.insert(postpaid, { wallet = flat[i], postpaid = flat[i + 1] })
end
local limits = {}
flat = redis.call('HGETALL', base .. 'limits')
for i = 1, #flat, 2 do
  table.insert(limits, { id = flat[i], limit = flat[i + 1] })
end
local alerts = {}
for _, wallet in ipairs(redis.call('SMEMBERS', base .. 'alerts')) do
  local a = hash_to_table(redis.call('HGETALL', base .. 'alerts:' .. wallet))
  a.wallet = wallet
  table.insert(alerts, a)
end
return { cjson.encode({
  account = acct, now = fmt(now_ms()), grants = grants, holds = holds, postpaid = postpaid,
  limits = limits, alerts = alerts,
}) }
