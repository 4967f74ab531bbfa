-- Set limit: sets a spend limit (a new one counts from now; one set again keeps what it has
-- counted) or removes it.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream   KEYS[3] partition account set
-- ARGV[1] account key base   ARGV[2] account id   ARGV[3] limit id   ARGV[4] label key
-- ARGV[5] label value   ARGV[6] window ('day', 'month' or 'total')   ARGV[7] amount, or '' to
-- remove   ARGV[8] most limits per account
-- ARGV[9] '1' to create the account if it is absent (the ledger does not have it either)
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} | {'not_found'} | {'too_many'} |
--        {'ok', limits: [{"id", "limit"}][, outbox id, outbox entries]}
local base, account, id = ARGV[1], ARGV[2], ARGV[3]
local key, value, per = ARGV[4], ARGV[5], ARGV[6]
local amount = nil
if ARGV[7] ~= '' then
  amount = minor(ARGV[7], 'limit amount')
end
local limits_max = minor(ARGV[8], 'limit count')

if outbox_full(KEYS[2]) then
  return { 'full' }
end
local now = now_ms()
local entries = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[9] ~= '1' or amount == nil then
    return { 'absent' }
  end
  table.insert(entries, create_account(KEYS[1], KEYS[3], account, now))
end

local function listed(limits)
  local out = {}
  for _, l in ipairs(limits) do
    table.insert(out, { id = l.id, limit = encode_limit(l) })
  end
  if #out == 0 then
    return '[]'
  end
  return cjson.encode(out)
end

local limits = load_limits(base, now)
local found, index = nil, nil
for i, l in ipairs(limits) do
  if l.id == id then
    found, index = l, i
  end
end
if amount == nil then
  if found == nil then
    return { 'not_found' }
  end
  redis.call('HDEL', base .. 'limits', id)
  table.remove(limits, index)
  table.insert(entries, {
    type = 'limit', account = account, key = key, value = value, per = per,
    amount = fmt(found.amount), since = fmt(found.since), removed = '1', at = fmt(now),
  })
else
  if found ~= nil and found.amount == amount then
    return { 'ok', listed(limits) }
  end
  if found == nil then
    if #limits >= limits_max then
      return { 'too_many' }
    end
    found = {
      id = id, key = key, value = value, per = per, amount = amount,
      index = limit_window(per, now), used = 0, held = 0, since = now,
    }
    table.insert(limits, found)
    table.sort(limits, function(a, b) return bytes_before(a.id, b.id) end)
  end
  found.amount = amount
  redis.call('HSET', base .. 'limits', id, encode_limit(found))
  table.insert(entries, {
    type = 'limit', account = account, key = key, value = value, per = per,
    amount = fmt(amount), since = fmt(found.since), removed = '0', at = fmt(now),
  })
end
local outbox_id, entries_text = outbox(KEYS[2], entries, now)
return { 'ok', listed(limits), outbox_id, entries_text }
