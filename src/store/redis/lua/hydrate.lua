-- Hydrate: loads an account from the ledger into Redis, only if Redis does not have it, so
-- that replicas hydrating the same account at once cannot add its credit twice.
--
-- KEYS[1] account hash   KEYS[2] partition expiry set   KEYS[3] partition account set
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] retention (ms)
-- ARGV[4] account: {"status", "name", "created"}
-- ARGV[5] grants: [{"id", "wallet", "grant" (encoded as in lib.lua)}]
-- ARGV[6] holds: [{"token", "hold" (the hold's fields)}]
-- ARGV[7] idempotent replies: [{"key", "fingerprint", "reply", "at"}]
-- Reply: {'hydrated'} | {'present'}
local base, account = ARGV[1], ARGV[2]
local retention = minor(ARGV[3], 'retention')
-- Present if any of its keys is: an account half there is never written over.
if redis.call('EXISTS', KEYS[1], base .. 'wallets', base .. 'holds') > 0 then
  return { 'present' }
end
local acct = cjson.decode(ARGV[4])
local grants = cjson.decode(ARGV[5])
local holds = cjson.decode(ARGV[6])
local replies = cjson.decode(ARGV[7])
local now = now_ms()
for _, g in ipairs(grants) do
  redis.call('HSET', base .. 'grants:' .. g.wallet, g.id, g.grant)
  redis.call('SADD', base .. 'wallets', g.wallet)
end
for _, h in ipairs(holds) do
  local key = base .. 'hold:' .. h.token
  for k, v in pairs(h.hold) do
    redis.call('HSET', key, k, v)
  end
  if h.hold.state == 'held' then
    redis.call('SADD', base .. 'holds', h.token)
    redis.call('ZADD', KEYS[2], h.hold.expires, account .. '/' .. h.token)
  else
    redis.call('PEXPIRE', key, fmt(retention))
  end
end
for _, r in ipairs(replies) do
  local key = base .. 'idem:' .. r.key
  redis.call('HSET', key, 'fingerprint', r.fingerprint, 'reply', r.reply, 'at', r.at)
  local left = tonumber(r.at) + retention - now
  if left < 1 then
    left = 1
  end
  redis.call('PEXPIRE', key, fmt(left))
end
-- The account hash marks the account as loaded: written last.
redis.call('SADD', KEYS[3], account)
redis.call('HSET', KEYS[1], 'status', acct.status, 'name', acct.name, 'created', acct.created)
return { 'hydrated' }
