-- Wallet events and alerts (event.rs, alert.rs): what a change caused, thresholds crossed,
-- auto top-ups asked for.

local function hash_to_table(flat)
  local t = {}
  for i = 1, #flat, 2 do
    t[flat[i]] = flat[i + 1]
  end
  return t
end

-- Events ----------------------------------------------------------------------------------
-- What a change caused, as src/store/memory/account.rs (wallet_events) and src/domain/alert.rs decide
-- it, made in the same step as the change: published to every replica on the channel
-- "<namespace>:events" (see keys.rs; the namespace is what `base` starts with) and written to
-- the outbox with the change, as {type = 'event', id, kind, account, wallet, at, available}
-- and, by kind, below | percent | limit | request and amount | reservation (a token).

local function new_event(base, account, wallet, kind, now, available, fields)
  local n = redis.call('INCR', base .. 'events')
  local e = {
    type = 'event', id = 'evt/' .. account .. '/' .. fmt(now) .. '.' .. fmt(n), kind = kind,
    account = account, wallet = wallet, at = fmt(now), available = fmt(available),
  }
  for k, v in pairs(fields) do
    e[k] = v
  end
  local namespace = string.sub(base, 1, string.find(base, ':', 1, true) - 1)
  redis.call('PUBLISH', namespace .. ':events', cjson.encode(e))
  return e
end

-- A wallet's thresholds and auto top-up live in the hash <base>alerts:<wallet>: rules
-- ('below:<minor>' or 'percent:<n>', comma-separated), armed ('1' or '0' per rule), top_up
-- ('<below>|amount|<minor>' or '<below>|target|<minor>', or ''), open (the top-up request not
-- answered yet, or ''), made (top-up requests made so far). The set <base>alerts lists them.
local function load_alerts(base, wallet)
  local key = base .. 'alerts:' .. wallet
  local f = hash_to_table(redis.call('HGETALL', key))
  if next(f) == nil then
    return nil
  end
  local a = { key = key, rules = {}, armed = {}, open = f.open or '', made = tonumber(f.made or '0') }
  for _, text in ipairs(split_text(f.rules or '', ',')) do
    local kind, n = string.match(text, '^(%a+):(%d+)$')
    table.insert(a.rules, { kind = kind, n = tonumber(n) })
  end
  local armed = f.armed or ''
  for i = 1, #a.rules do
    a.armed[i] = string.sub(armed, i, i) ~= '0'
  end
  if (f.top_up or '') ~= '' then
    local t = split_text(f.top_up, '|')
    a.top_up = { below = tonumber(t[1]), size = t[2], n = tonumber(t[3]) }
  end
  return a
end

local function armed_text(a)
  local armed = {}
  for i = 1, #a.rules do
    armed[i] = a.armed[i] and '1' or '0'
  end
  return table.concat(armed)
end

local function save_alert_state(a)
  redis.call('HSET', a.key, 'armed', armed_text(a), 'open', a.open, 'made', fmt(a.made))
end

-- The wallet as its alerts judge it: spendable, and its included allowances given and left.
local function alert_level(w, now)
  local allowance, left = 0, 0
  for _, g in ipairs(w.grants) do
    if g.kind == 'included' and active(g, now) then
      allowance = allowance + (g.pgranted or g.amount)
      left = left + spendable(g)
    end
  end
  return wallet_available(w, now), allowance, left
end

-- Whether the wallet is past a threshold. For a percentage, 100 * used >= n * allowance,
-- worked out without a product above 2^53: with allowance = 100q + r, it is
-- 100 * (used - n * q) >= n * r, where n * r < 10^4.
local function rule_met(rule, available, allowance, left)
  if rule.kind == 'below' then
    return available < rule.n
  end
  if allowance <= 0 then
    return false
  end
  local used = math.max(0, allowance - left)
  local r = allowance % 100
  local d = used - rule.n * ((allowance - r) / 100)
  return d >= 100 or (d >= 0 and 100 * d >= rule.n * r)
end

-- A threshold fires once and is re-armed by credit lifting the wallet back over it; a top-up
-- is requested when the wallet is below its policy's threshold and none is open. Adds the
-- events to `events`, and when thresholds fired or were re-armed, an outbox entry saying so.
local function judge_alerts(base, account, w, now, credit_came_in, events)
  local a = load_alerts(base, w.name)
  if a == nil then
    return
  end
  local available, allowance, left = alert_level(w, now)
  local changed, armed_changed = false, false
  for i, rule in ipairs(a.rules) do
    local met = rule_met(rule, available, allowance, left)
    if met and a.armed[i] then
      a.armed[i], changed, armed_changed = false, true, true
      if rule.kind == 'below' then
        table.insert(events, new_event(base, account, w.name, 'low_balance', now, available,
          { below = fmt(rule.n) }))
      else
        table.insert(events, new_event(base, account, w.name, 'alert', now, available,
          { percent = fmt(rule.n) }))
      end
    elseif not met and not a.armed[i] and credit_came_in then
      a.armed[i], changed, armed_changed = true, true, true
    end
  end
  local t = a.top_up
  if t and a.open == '' and available < t.below then
    local amount = t.n
    if t.size == 'target' then
      amount = t.n - available
    end
    a.made = a.made + 1
    a.open = 'topup/' .. account .. '/' .. w.name .. '/' .. fmt(a.made)
    changed = true
    table.insert(events, new_event(base, account, w.name, 'top_up_requested', now, available,
      { request = a.open, amount = fmt(amount) }))
  end
  if changed then
    save_alert_state(a)
  end
  if armed_changed then
    -- For the ledger, so that a wallet loaded again knows which thresholds have fired.
    table.insert(events, {
      type = 'alerts_armed', account = account, wallet = w.name, armed = armed_text(a),
      at = fmt(now),
    })
  end
end

-- Each spend limit's room, by id: taken before an operation that counts them.
local function limit_rooms(limits)
  local rooms = {}
  for _, l in ipairs(limits) do
    rooms[l.id] = limit_room(l)
  end
  return rooms
end

-- The events a change of wallet `w` caused: zero crossed, spend limits reached (given the
-- limits' rooms before, for an operation that counts them), thresholds crossed, a top-up
-- requested. `before` is the wallet's spendable balance before the change; `credit_came_in`
-- whether it added credit, which re-arms thresholds (as a plan reset on loading does).
local function wallet_events(base, account, w, now, before, credit_came_in, limits, rooms)
  local events = {}
  local after = wallet_available(w, now)
  local kind = nil
  if before > 0 and after <= 0 then
    kind = 'depleted'
  elseif before <= 0 and after > 0 then
    kind = 'replenished'
  end
  if kind then
    table.insert(events, new_event(base, account, w.name, kind, now, after, {}))
  end
  for _, l in ipairs(limits or {}) do
    if rooms[l.id] and rooms[l.id] > 0 and limit_room(l) <= 0 then
      table.insert(events, new_event(base, account, w.name, 'limit_reached', now, after,
        { limit = l.id }))
    end
  end
  judge_alerts(base, account, w, now, credit_came_in or w.refilled, events)
  return events
end

-- Appends `events` to an outbox record's entries.
local function with_events(entries, events)
  for _, e in ipairs(events) do
    table.insert(entries, e)
  end
  return entries
end
