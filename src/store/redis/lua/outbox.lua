-- The outbox and the steps every spending script takes first (record.rs): the partition's
-- epoch, appending a record, idempotent replies, creating an account.

-- Whether the partition's outbox holds as many records as the bound given as the script's last
-- argument: then the ledger is behind, and the script refuses before any write.
local function outbox_full(stream)
  local bound = tonumber(ARGV[#ARGV])
  return bound ~= nil and redis.call('XLEN', stream) >= bound
end

-- The partition's epoch: the incarnation of its keys, made by whoever first needs it after Redis
-- lost them (or at the start), from the time, so that no two incarnations share one. It sits
-- beside the partition's outbox stream, so it shares its hash tag.
local function epoch_of(stream)
  local key = string.sub(stream, 1, -7) .. 'epoch'
  local epoch = redis.call('GET', key)
  if not epoch then
    local t = redis.call('TIME')
    epoch = t[1] .. '.' .. t[2]
    redis.call('SET', key, epoch)
  end
  return epoch
end

-- Appends one outbox record: everything this operation tells the ledger, in one stream entry,
-- with the partition's epoch. Returns the record's position (`<stream id>@<epoch>`) and the
-- entries as written, which the script's reply carries too.
local function outbox(stream, entries, now)
  local text = cjson.encode(entries)
  local epoch = epoch_of(stream)
  local id = redis.call('XADD', stream, '*', 'at', fmt(now), 'epoch', epoch, 'entries', text)
  return id .. '@' .. epoch, text
end

-- Creates an account neither Redis nor the ledger has; returns the outbox entry that says so.
local function create_account(account_key, accounts, account, now)
  redis.call('HSET', account_key, 'status', 'active', 'name', '', 'created', fmt(now))
  redis.call('SADD', accounts, account)
  return { type = 'account', account = account, status = 'active', name = '', created = fmt(now) }
end

-- The idempotent reply kept for a key, if the same request comes again; an error reply if the
-- key was used for another request.
local function recall(key, fingerprint)
  local kept = redis.call('HMGET', key, 'fingerprint', 'reply')
  if kept[1] == false then
    return nil
  end
  if kept[1] ~= fingerprint then
    return { 'conflict' }
  end
  return { 'replay', kept[2] }
end

local function remember(key, fingerprint, reply, now, retention_ms)
  redis.call('HSET', key, 'fingerprint', fingerprint, 'reply', reply, 'at', fmt(now))
  redis.call('PEXPIRE', key, fmt(retention_ms))
end

-- The checks reserve and charge make before writing anything: room in the outbox, the account
-- loaded, a repeated idempotency key, a suspended account. Returns the answer to give at once,
-- or nil and what the script goes on with (the time, the wallet, and what it has for the
-- feature).
local function begin_spending(account_key, stream, base, account, wallet, feature, key,
                              fingerprint)
  if outbox_full(stream) then
    return { 'full' }
  end
  local status = redis.call('HGET', account_key, 'status')
  if not status then
    return { 'absent' }
  end
  local idem_key = base .. 'idem:' .. key
  if key ~= '' then
    local kept = recall(idem_key, fingerprint)
    if kept then
      return kept
    end
  end
  local now = now_ms()
  local w = load_wallet(base, account, wallet, now)
  local available = available_for(w, feature, now)
  if status == 'suspended' then
    return { 'denied', 'account_suspended', fmt(available) }
  end
  return nil, { now = now, w = w, available = available, idem_key = idem_key }
end
