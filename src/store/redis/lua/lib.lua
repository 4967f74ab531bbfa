-- Shared by every creditgate script: prepended to each when it is loaded.
--
-- Conventions. KEYS[1] is the account's hash and names the Cluster slot; every other key a
-- script touches shares its hash tag (see keys.rs). ARGV[1] is the account's key base, to which
-- scripts append the documented suffixes. Amounts are integer minor units, passed and stored as
-- decimal strings, never above 2^53 - 1, and formatted with fmt() before they are written
-- (Redis would print a Lua number with 14 digits). The clock is Redis TIME. Every script checks
-- everything before its first write: Redis does not roll a script back. The base ends with '/',
-- which no id contains, so no two accounts' keys can meet.

local MINOR_MAX = 9007199254740991

local function fmt(n)
  return string.format('%d', n)
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A non-negative integer argument within the money bound; anything else aborts the script.
local function minor(text, what)
  local n = tonumber(text)
  if n == nil or n ~= math.floor(n) or n < 0 or n > MINOR_MAX then
    error('creditgate: invalid ' .. what .. ': ' .. tostring(text))
  end
  return n
end

-- Longest hold TTL a script accepts: a year, far below the money bound when added to now.
local TTL_MS_MAX = 366 * 86400000

local function ttl_ms(text)
  local ttl = minor(text, 'ttl')
  if ttl > TTL_MS_MAX then
    error('creditgate: ttl above a year: ' .. text)
  end
  return ttl
end

local function split_text(text, sep)
  local out = {}
  if text == nil or text == '' then
    return out
  end
  local start = 1
  while true do
    local i = string.find(text, sep, start, true)
    if not i then
      table.insert(out, string.sub(text, start))
      return out
    end
    table.insert(out, string.sub(text, start, i - 1))
    start = i + #sep
  end
end

-- Byte-wise string order, as Rust orders ids (Lua's `<` follows the locale).
local function bytes_before(a, b)
  local n = math.min(#a, #b)
  for i = 1, n do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end

-- A grant is stored as one hash field, its id, with the value
-- kind|priority|amount|remaining|held|expires_at|created_at|voided_at|feature,feature...
local function decode_grant(id, text)
  local f = split_text(text, '|')
  local g = {
    id = id,
    kind = f[1],
    priority = tonumber(f[2]),
    amount = tonumber(f[3]),
    remaining = tonumber(f[4]),
    held = tonumber(f[5]),
    expires = (f[6] ~= '' and tonumber(f[6])) or nil,
    created = tonumber(f[7]),
    voided = (f[8] ~= '' and tonumber(f[8])) or nil,
    features_text = f[9] or '',
    features = {},
    scoped = false,
  }
  for _, feature in ipairs(split_text(g.features_text, ',')) do
    g.features[feature] = true
    g.scoped = true
  end
  return g
end

local function encode_grant(g)
  return table.concat({
    g.kind, fmt(g.priority), fmt(g.amount), fmt(g.remaining), fmt(g.held),
    g.expires and fmt(g.expires) or '', fmt(g.created), g.voided and fmt(g.voided) or '',
    g.features_text,
  }, '|')
end

local function load_grants(key)
  local flat = redis.call('HGETALL', key)
  local grants, by_id = {}, {}
  for i = 1, #flat, 2 do
    local g = decode_grant(flat[i], flat[i + 1])
    table.insert(grants, g)
    by_id[g.id] = g
  end
  return grants, by_id
end

local function active(g, now)
  return g.voided == nil and (g.expires == nil or g.expires > now)
end

local function admits(g, feature)
  return (not g.scoped) or g.features[feature] == true
end

local function spendable(g)
  return g.remaining - g.held
end

-- The consumption order (DESIGN.md): scoped before unscoped, lower priority, earlier expiry,
-- older, then id.
local function consumed_before(a, b)
  if a.scoped ~= b.scoped then
    return a.scoped
  end
  if a.priority ~= b.priority then
    return a.priority < b.priority
  end
  local ea, eb = a.expires or math.huge, b.expires or math.huge
  if ea ~= eb then
    return ea < eb
  end
  if a.created ~= b.created then
    return a.created < b.created
  end
  return bytes_before(a.id, b.id)
end

local function available_for(grants, feature, now)
  local available = 0
  for _, g in ipairs(grants) do
    if active(g, now) and admits(g, feature) then
      available = available + spendable(g)
    end
  end
  return available
end

local function wallet_available(grants, now)
  local available = 0
  for _, g in ipairs(grants) do
    if active(g, now) then
      available = available + spendable(g)
    end
  end
  return available
end

-- Splits `amount` over the grants that may pay for `feature`, in consumption order. Returns the
-- split (a list of {grant id, amount}), or nil with the reason of the denial.
local function plan_draw(grants, feature, now, amount)
  local order, available, elsewhere = {}, 0, false
  for _, g in ipairs(grants) do
    if active(g, now) then
      if admits(g, feature) then
        table.insert(order, g)
        available = available + spendable(g)
      elseif spendable(g) > 0 then
        elsewhere = true
      end
    end
  end
  if available < amount then
    if available == 0 and elsewhere then
      return nil, 'feature_not_allowed', 0
    end
    return nil, 'insufficient_credits', available
  end
  table.sort(order, consumed_before)
  local split, left = {}, amount
  for _, g in ipairs(order) do
    if left == 0 then
      break
    end
    local take = math.min(spendable(g), left)
    if take > 0 then
      table.insert(split, { g.id, take })
      left = left - take
    end
  end
  return split, nil, available
end

-- A split travels as "grant=amount,grant=amount" (ids hold neither '=' nor ',').
local function encode_split(split)
  local parts = {}
  for _, p in ipairs(split) do
    table.insert(parts, p[1] .. '=' .. fmt(p[2]))
  end
  return table.concat(parts, ',')
end

local function decode_split(text)
  local split = {}
  for _, part in ipairs(split_text(text, ',')) do
    local eq = string.find(part, '=', 1, true)
    table.insert(split, { string.sub(part, 1, eq - 1), tonumber(string.sub(part, eq + 1)) })
  end
  return split
end

-- Portions of `split` charged when `charge` of it is committed, and the rest released.
local function settle(split, charge)
  local charged, released, left = {}, {}, charge
  for _, p in ipairs(split) do
    local take = math.min(p[2], left)
    left = left - take
    if take > 0 then
      table.insert(charged, { p[1], take })
    end
    if p[2] > take then
      table.insert(released, { p[1], p[2] - take })
    end
  end
  return charged, released
end

-- Adds `sign` times each portion to the grants' held amounts (the caller saves the grants).
local function adjust_held(by_id, split, sign)
  for _, p in ipairs(split) do
    local g = by_id[p[1]]
    g.held = g.held + sign * p[2]
  end
end

local function save_grants(key, by_id, split)
  for _, p in ipairs(split) do
    local g = by_id[p[1]]
    redis.call('HSET', key, g.id, encode_grant(g))
  end
end

local function hash_to_table(flat)
  local t = {}
  for i = 1, #flat, 2 do
    t[flat[i]] = flat[i + 1]
  end
  return t
end

-- Tells every replica when a wallet's spendable balance (for any feature) crosses zero, on the
-- channel "<namespace>:events" (see keys.rs), the namespace being what `base` starts with. A
-- message is "depleted|<time>|<account>|<wallet>" or "replenished|..."; ids hold no '|'.
local function publish_crossing(base, account, wallet, before, after, now)
  local kind = nil
  if before > 0 and after <= 0 then
    kind = 'depleted'
  elseif before <= 0 and after > 0 then
    kind = 'replenished'
  end
  if kind then
    local namespace = string.sub(base, 1, string.find(base, ':', 1, true) - 1)
    redis.call('PUBLISH', namespace .. ':events',
      kind .. '|' .. fmt(now) .. '|' .. account .. '|' .. wallet)
  end
end

-- Whether the partition's outbox holds as many records as the bound given as the script's last
-- argument: then the ledger is behind, and the script refuses before any write.
local function outbox_full(stream)
  local bound = tonumber(ARGV[#ARGV])
  return bound ~= nil and redis.call('XLEN', stream) >= bound
end

-- Appends one outbox record: everything this operation tells the ledger, in one stream entry.
local function outbox(stream, entries, now)
  return redis.call('XADD', stream, '*', 'at', fmt(now), 'entries', cjson.encode(entries))
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
-- or nil and what the script goes on with (the time, the wallet's grants and what they hold
-- for the feature).
local function begin_spending(account_key, stream, base, wallet, feature, key, fingerprint)
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
  local grants_key = base .. 'grants:' .. wallet
  local grants, by_id = load_grants(grants_key)
  local available = available_for(grants, feature, now)
  if status == 'suspended' then
    return { 'denied', 'account_suspended', fmt(available) }
  end
  return nil, {
    now = now, grants_key = grants_key, grants = grants, by_id = by_id,
    available = available, idem_key = idem_key,
  }
end
