-- Expire: releases the holds of one partition whose expiry has passed.
--
-- KEYS[1] partition expiry set   KEYS[2] partition outbox stream
-- ARGV[1] partition key prefix of accounts (an account's base is this prefix, its id and '/')
-- ARGV[2] retention (ms)   ARGV[3] most holds to look at
-- Reply: {examined, expired, outbox id or '', outbox entries or ''}
local prefix = ARGV[1]
local retention = minor(ARGV[2], 'retention')
local limit = minor(ARGV[3], 'limit')
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', fmt(now), 'LIMIT', 0, fmt(limit))
local entries, expired = {}, 0
for _, member in ipairs(due) do
  local slash = 0
  for i = #member, 1, -1 do
    if string.sub(member, i, i) == '/' then
      slash = i
      break
    end
  end
  local account, token = string.sub(member, 1, slash - 1), string.sub(member, slash + 1)
  local base = prefix .. account .. '/'
  local hold_key = base .. 'hold:' .. token
  local h = load_hold(hold_key)
  -- A hold whose split names a grant its wallet lacks cannot be given back; leave it out
  -- (reconcile reports it) rather than stop every later sweep of the partition on it.
  local whole = h ~= nil
  if whole then
    local _, by_id = load_grants(base .. 'grants:' .. h.wallet)
    for _, p in ipairs(h.split_t) do
      if by_id[p[1]] == nil and p[1] ~= FLEX then
        whole = false
      end
    end
  end
  if whole and h.state == 'held' and h.expires_n <= now then
    for _, e in ipairs(end_uncharged(base, account, token, hold_key, h, 'expired', KEYS[1], now,
      retention)) do
      table.insert(entries, e)
    end
    expired = expired + 1
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
if #entries == 0 then
  return { #due, 0, '', '' }
end
local id, entries_text = outbox(KEYS[2], entries, now)
return { #due, expired, id, entries_text }
