-- Put account: sets an account's name and status.
--
-- KEYS[1] account hash   KEYS[2] partition outbox stream   KEYS[3] partition account set
-- ARGV[1] account id   ARGV[2] display name   ARGV[3] status ('active' or 'suspended')
-- ARGV[4] '1' to create the account if it is absent (the ledger does not have it either)
-- ARGV[last] outbox bound: with this many records in the partition's stream, refuse.
-- Reply: {'full'} outbox full | {'absent'} | {'ok', status, name, created[, outbox id, outbox entries]}
local account, name, status = ARGV[1], ARGV[2], ARGV[3]
if status ~= 'active' and status ~= 'suspended' then
  error('creditgate: invalid status: ' .. status)
end
if outbox_full(KEYS[2]) then
  return { 'full' }
end
local now = now_ms()
local current = redis.call('HMGET', KEYS[1], 'status', 'name', 'created')
if current[1] == false then
  if ARGV[4] ~= '1' then
    return { 'absent' }
  end
  current = { nil, nil, fmt(now) }
  redis.call('SADD', KEYS[3], account)
elseif current[1] == status and current[2] == name then
  return { 'ok', status, name, current[3] }
end
redis.call('HSET', KEYS[1], 'status', status, 'name', name, 'created', current[3])
local entries = { {
  type = 'account', account = account, status = status, name = name, created = current[3],
} }
local id, entries_text = outbox(KEYS[2], entries, now)
return { 'ok', status, name, current[3], id, entries_text }
