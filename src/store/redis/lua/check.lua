-- Check: would a hold of `amount` for a feature be allowed now? Changes nothing.
--
-- KEYS[1] account hash
-- ARGV[1] account key base   ARGV[2] wallet   ARGV[3] feature   ARGV[4] amount
-- ARGV[5] labels (JSON), for the spend limits
-- Reply: {'absent'} | {'denied', reason, available[, spend limit]} | {'ok', available}
local base, wallet, feature = ARGV[1], ARGV[2], ARGV[3]
local amount = minor(ARGV[4], 'amount')
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return { 'absent' }
end
local now = now_ms()
local w = load_wallet(base, '', wallet, now)
local available = available_for(w, feature, now)
if status == 'suspended' then
  return { 'denied', 'account_suspended', fmt(available) }
end
local capped, limit_id, room = limit_cap(load_limits(base, now), cjson.decode(ARGV[5]), amount,
  amount)
if not capped then
  return { 'denied', 'spend_limit_reached', fmt(room), limit_id }
end
local split, reason, shortfall = plan_draw(w, feature, now, amount)
if not split then
  return { 'denied', reason, fmt(shortfall) }
end
return { 'ok', fmt(available) }
