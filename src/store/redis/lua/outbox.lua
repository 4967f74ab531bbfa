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

-- Appends one outbox record to `stream`, with the partition's epoch. Returns the record's
-- position (`<stream id>@<epoch>`) and the entries as written.
local function append_record(stream, entries, now)
  local text = cjson.encode(entries)
  local epoch = epoch_of(stream)
  local id = redis.call('XADD', stream, '*', 'at', fmt(now), 'epoch', epoch, 'entries', text)
  return id .. '@' .. epoch, text
end

-- While a batch runs (batch.lua), records wait here to be appended when it ends, one per
-- account: `records` in the order their accounts first wrote, `by_account` to find them,
-- `of_op` the number of the record each operation wrote to, `op` the operation running.
local batch = nil

local function begin_batch()
  batch = { records = {}, by_account = {}, of_op = {}, op = 0 }
end

-- Forgets a batch that ended in an error before end_batch: every call but a batch starts so.
local function no_batch()
  batch = nil
end

-- Everything this operation tells the ledger, in one outbox record with the partition's epoch.
-- Returns the record's position (`<stream id>@<epoch>`) and the entries as written, which the
-- script's reply carries too; inside a batch, the entries join their account's record (the
-- account is ARGV[2], as in every script a batch runs) and both are '' (the batch's reply
-- carries the record).
local function outbox(stream, entries, now)
  if batch == nil then
    return append_record(stream, entries, now)
  end
  local account = ARGV[2]
  local record = batch.by_account[account]
  if record == nil then
    record = { stream = stream, entries = {}, number = #batch.records + 1 }
    batch.records[record.number] = record
    batch.by_account[account] = record
  end
  for _, e in ipairs(entries) do
    record.entries[#record.entries + 1] = e
  end
  record.now = now
  batch.of_op[batch.op] = record.number
  return '', ''
end

-- Runs operation `i` of the batch next.
local function batch_op(i)
  batch.op = i
end

-- The number of the record operation `i` wrote to, '0' for none.
local function batch_record_of(i)
  return fmt(batch.of_op[i] or 0)
end

-- Appends the batch's records; returns their positions and entries, in turn.
local function end_batch()
  local flat = {}
  for _, record in ipairs(batch.records) do
    local position, text = append_record(record.stream, record.entries, record.now)
    flat[#flat + 1] = position
    flat[#flat + 1] = text
  end
  batch = nil
  return flat
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
