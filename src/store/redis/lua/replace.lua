-- Replace: rebuilds an account from the ledger (reconcile --rebuild), but only if Redis still
-- holds exactly what the reconciler compared, so that no change made meanwhile is lost.
--
-- KEYS[1] account hash   KEYS[2] partition expiry set   KEYS[3] partition account set
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] retention (ms)
-- ARGV[4..10] the ledger's account, grants, holds, replies, flex and debt, spend limits and
--           alerts, as
--           for hydrate.lua
-- ARGV[11] expected: {"grants": [{"id", "wallet", "grant"}], "holds": [token, ...],
--         "postpaid": [{"wallet", "postpaid"}], "limits": [{"id", "limit"}]}, the grants
--         (encoded), open holds, flex and debt, and limits the comparison saw
-- Reply: {'replaced'} | {'changed'}
local base, account = ARGV[1], ARGV[2]
local retention = minor(ARGV[3], 'retention')
local expected = cjson.decode(ARGV[11])

local seen, count = {}, 0
for _, g in ipairs(expected.grants or {}) do
  seen[g.wallet .. '/' .. g.id] = g.grant
  count = count + 1
end
local wallets = redis.call('SMEMBERS', base .. 'wallets')
for _, wallet in ipairs(wallets) do
  local flat = redis.call('HGETALL', base .. 'grants:' .. wallet)
  for i = 1, #flat, 2 do
    if seen[wallet .. '/' .. flat[i]] ~= flat[i + 1] then
      return { 'changed' }
    end
    count = count - 1
  end
end
if count ~= 0 then
  return { 'changed' }
end
local postpaid, left = {}, 0
for _, p in ipairs(expected.postpaid or {}) do
  postpaid[p.wallet] = p.postpaid
  left = left + 1
end
local flat = redis.call('HGETALL', base .. 'postpaid')
for i = 1, #flat, 2 do
  if postpaid[flat[i]] ~= flat[i + 1] then
    return { 'changed' }
  end
  left = left - 1
end
if left ~= 0 then
  return { 'changed' }
end
-- Limits are JSON, whose key order and escapes differ between encoders: compare their fields.
local function limit_fields(text)
  local l = cjson.decode(text)
  return table.concat({ l.key, l.value, l.per, l.amount, l.index, l.used, l.held, l.since }, '\0')
end
local limits = {}
left = 0
for _, l in ipairs(expected.limits or {}) do
  limits[l.id] = limit_fields(l.limit)
  left = left + 1
end
flat = redis.call('HGETALL', base .. 'limits')
for i = 1, #flat, 2 do
  if limits[flat[i]] ~= limit_fields(flat[i + 1]) then
    return { 'changed' }
  end
  left = left - 1
end
if left ~= 0 then
  return { 'changed' }
end
local open = redis.call('SMEMBERS', base .. 'holds')
local wanted = {}
for _, token in ipairs(expected.holds or {}) do
  wanted[token] = true
end
if #open ~= #(expected.holds or {}) then
  return { 'changed' }
end
for _, token in ipairs(open) do
  if not wanted[token] then
    return { 'changed' }
  end
end

for _, wallet in ipairs(wallets) do
  redis.call('DEL', base .. 'grants:' .. wallet)
end
for _, wallet in ipairs(redis.call('SMEMBERS', base .. 'alerts')) do
  redis.call('DEL', base .. 'alerts:' .. wallet)
end
redis.call('DEL', base .. 'wallets', base .. 'postpaid', base .. 'limits', base .. 'alerts')
for _, token in ipairs(open) do
  redis.call('DEL', base .. 'hold:' .. token)
  redis.call('ZREM', KEYS[2], account .. '/' .. token)
end
redis.call('DEL', base .. 'holds')
write_account(base, account, retention, KEYS[1], KEYS[2], KEYS[3], ARGV[4], ARGV[5], ARGV[6],
  ARGV[7], ARGV[8], ARGV[9], ARGV[10])
return { 'replaced' }
