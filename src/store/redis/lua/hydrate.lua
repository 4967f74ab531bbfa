-- Hydrate: loads an account from the ledger into Redis, only if Redis does not have it, so
-- that replicas hydrating the same account at once cannot add its credit twice.
--
-- KEYS[1] account hash   KEYS[2] partition expiry set   KEYS[3] partition account set
-- KEYS[4] partition epoch
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] retention (ms)
-- ARGV[4] account: {"status", "name", "created"}
-- ARGV[5] grants: [{"id", "wallet", "grant" (encoded as in grants.lua)}]
-- ARGV[6] holds: [{"token", "hold" (the hold's fields)}]
-- ARGV[7] idempotent replies: [{"key", "fingerprint", "reply", "at"}]
-- ARGV[8] wallets' flex and debt: [{"wallet", "postpaid" (encoded as in wallet.lua)}]
-- ARGV[9] spend limits: [{"id", "limit" (encoded as in limits.lua)}]
-- ARGV[10] alerts: [{"wallet", "rules", "armed", "top_up", "open", "made"} (as load_alerts in
--          events.lua; armed '' when not known)]
-- ARGV[11] the partition's epoch the ledger was told it is loaded in
-- Reply: {'hydrated'} | {'present'} | {'moved'} the partition is in another epoch now (Redis lost
--        its keys again): load it again
local base, account = ARGV[1], ARGV[2]
local retention = minor(ARGV[3], 'retention')
-- Present if any of its keys is: an account half there is never written over.
if redis.call('EXISTS', KEYS[1], base .. 'wallets', base .. 'holds', base .. 'postpaid',
  base .. 'limits', base .. 'alerts') > 0 then
  return { 'present' }
end
if redis.call('GET', KEYS[4]) ~= ARGV[11] then
  return { 'moved' }
end
write_account(base, account, retention, KEYS[1], KEYS[2], KEYS[3], ARGV[4], ARGV[5], ARGV[6],
  ARGV[7], ARGV[8], ARGV[9], ARGV[10])
return { 'hydrated' }
