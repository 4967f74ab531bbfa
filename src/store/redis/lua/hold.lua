-- Ending a hold, shared by commit, release, extend and expire (last of the library's shared files).

-- The hold's next version: every change raises it, so the ledger keeps the newest.
local function next_version(h)
  return fmt((tonumber(h.version) or 0) + 1)
end

-- The hold hash at `key` as a table, with its split decoded; nil if there is none.
local function load_hold(key)
  local h = hash_to_table(redis.call('HGETALL', key))
  if h.state == nil then
    return nil
  end
  h.amount_n = tonumber(h.amount)
  h.expires_n = tonumber(h.expires)
  h.split_t = decode_split(h.split)
  return h
end

-- The hold's fields as the outbox carries them (every value a string).
local function hold_entry(account, token, h)
  local fields = {}
  for k, v in pairs(h) do
    if type(v) == 'string' then
      fields[k] = v
    end
  end
  return { type = 'hold', account = account, token = token, hold = fields }
end

-- Voids what a hold gave back to grants voided while it was open, and returns the ledger
-- entries that say so.
local function void_released(account, token, wallet, by_id, released, now)
  local entries = {}
  for _, p in ipairs(released) do
    local g = by_id[p[1]]
    if g and g.voided ~= nil and p[2] > 0 then
      g.remaining = g.remaining - p[2]
      table.insert(entries, {
        type = 'void',
        entry = {
          id = entry_id_void_released(account, g.id, token),
          kind = 'void', account = account, wallet = wallet, amount = fmt(p[2]),
          split = g.id .. '=' .. fmt(p[2]), reservation = account .. '/' .. token,
          grant = g.id, reason = 'released from a hold on a voided grant', at = fmt(now),
        },
      })
    end
  end
  return entries
end

-- Ends a held hold without a charge ('released' or 'expired'): gives its split back, voids what
-- went back to voided grants, records how it ended, and forgets it after the retention period.
-- Returns the outbox entries and the release reply.
local function end_uncharged(base, account, token, hold_key, h, state, expiries, now, retention)
  local w = load_wallet(base, account, h.wallet, now)
  local wallet_before = wallet_available(w, now)
  adjust_held(w, h.split_t, -1)
  settle_limits(base, h, h.amount_n, 0, now)
  local entries = with_resets(w, void_released(account, token, h.wallet, w.by_id, h.split_t, now))
  save_wallet(w, h.split_t)
  local available = available_for(w, h.feature, now)
  h.state = state
  h.version = next_version(h)
  h.r_released = h.amount
  h.r_available = fmt(available)
  h.r_at = fmt(now)
  redis.call('HSET', hold_key, 'state', state, 'version', h.version, 'r_released', h.r_released,
    'r_available', h.r_available, 'r_at', h.r_at)
  redis.call('PEXPIRE', hold_key, fmt(retention))
  redis.call('SREM', base .. 'holds', token)
  redis.call('ZREM', expiries, account .. '/' .. token)
  table.insert(entries, hold_entry(account, token, h))
  if state == 'expired' then
    table.insert(entries, new_event(base, account, h.wallet, 'hold_expired', now,
      wallet_available(w, now), { reservation = token }))
  end
  return with_events(entries, wallet_events(base, account, w, now, wallet_before, false))
end

-- Expires the hold if its time has passed; returns true if it did (the caller then answers
-- that the hold has ended).
local function expire_if_due(base, account, token, hold_key, h, stream, expiries, now, retention)
  if h.state == 'held' and h.expires_n <= now then
    local entries = end_uncharged(base, account, token, hold_key, h, 'expired', expiries, now,
      retention)
    outbox(stream, entries, now)
    return true
  end
  return false
end

-- Writes an account as the ledger has it (hydrate and rebuild): its grants, holds, replies,
-- wallets' flex and debt, spend limits and alerts, each argument a JSON list as hydrate.lua
-- describes; the account hash last, since it marks the account as loaded.
local function write_account(base, account, retention, account_key, expiries, accounts,
                             acct_json, grants_json, holds_json, replies_json, postpaid_json,
                             limits_json, alerts_json)
  local acct = cjson.decode(acct_json)
  local grants = cjson.decode(grants_json)
  local holds = cjson.decode(holds_json)
  local replies = cjson.decode(replies_json)
  local now = now_ms()
  for _, g in ipairs(grants) do
    redis.call('HSET', base .. 'grants:' .. g.wallet, g.id, g.grant)
    redis.call('SADD', base .. 'wallets', g.wallet)
  end
  for _, p in ipairs(cjson.decode(postpaid_json)) do
    redis.call('HSET', base .. 'postpaid', p.wallet, p.postpaid)
    redis.call('SADD', base .. 'wallets', p.wallet)
  end
  for _, l in ipairs(cjson.decode(limits_json)) do
    redis.call('HSET', base .. 'limits', l.id, l.limit)
  end
  for _, h in ipairs(holds) do
    local key = base .. 'hold:' .. h.token
    for k, v in pairs(h.hold) do
      redis.call('HSET', key, k, v)
    end
    if h.hold.state == 'held' then
      redis.call('SADD', base .. 'holds', h.token)
      redis.call('ZADD', expiries, h.hold.expires, account .. '/' .. h.token)
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
  for _, a in ipairs(cjson.decode(alerts_json)) do
    local rules = split_text(a.rules, ',')
    local armed = a.armed
    if #armed ~= #rules then
      -- Not known: a threshold the wallet is already past waits to be re-armed.
      local w = load_wallet(base, account, a.wallet, now)
      local available, allowance, left = alert_level(w, now)
      local flags = {}
      for i, text in ipairs(rules) do
        local kind, n = string.match(text, '^(%a+):(%d+)$')
        local met = rule_met({ kind = kind, n = tonumber(n) }, available, allowance, left)
        flags[i] = met and '0' or '1'
      end
      armed = table.concat(flags)
    end
    redis.call('HSET', base .. 'alerts:' .. a.wallet, 'rules', a.rules, 'armed', armed,
      'top_up', a.top_up, 'open', a.open, 'made', a.made)
    redis.call('SADD', base .. 'alerts', a.wallet)
  end
  redis.call('SADD', accounts, account)
  redis.call('HSET', account_key, 'status', acct.status, 'name', acct.name, 'created', acct.created)
end
