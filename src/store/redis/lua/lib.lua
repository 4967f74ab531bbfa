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
-- kind|priority|amount|remaining|held|expires_at|created_at|voided_at|recurrence|period|features
-- where recurrence is '' or "month|year,anchor (or ''),rollover max", period is the index of
-- the period the remaining amount belongs to (with ",<what it had at the period's start>" for a
-- recurring grant), and features are comma-separated. Grants written before recurrence have no
-- recurrence and period fields.
local function decode_grant(id, text)
  local f = split_text(text, '|')
  local recur_text, period_index, period_granted = '', 0, nil
  if #f > 9 then
    local p = split_text(f[10], ',')
    recur_text, period_index = f[9], tonumber(p[1])
    period_granted = p[2] and tonumber(p[2])
    f[9] = f[11]
  end
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
    recur_text = recur_text,
    pindex = period_index,
    pgranted = period_granted,
  }
  if recur_text ~= '' then
    local r = split_text(recur_text, ',')
    g.period = r[1]
    g.anchor = (r[2] ~= '' and tonumber(r[2])) or nil
    g.rollover = tonumber(r[3])
  end
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
    g.recur_text, fmt(g.pindex) .. (g.pgranted and (',' .. fmt(g.pgranted)) or ''),
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

-- Calendar arithmetic for recurring grants, as in period.rs: periods are UTC calendar months
-- (or years) from the anchor, on the anchor's day or the month's last day when it is shorter.
local DAY_MS = 86400000

local function days_from_civil(y, m, d)
  if m <= 2 then
    y = y - 1
  end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

local function civil_from_days(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = (mp < 10) and (mp + 3) or (mp - 9)
  local y = yoe + era * 400
  if m <= 2 then
    y = y + 1
  end
  return y, m, d
end

local function period_months(period)
  if period == 'year' then
    return 12
  end
  return 1
end

-- When period `index` starts, counting from `anchor`.
local function period_start(period, anchor, index)
  local days = math.floor(anchor / DAY_MS)
  local y, m, d = civil_from_days(days)
  local months = y * 12 + (m - 1) + index * period_months(period)
  local y2 = math.floor(months / 12)
  local m2 = months - y2 * 12 + 1
  local ny, nm = y2, m2 + 1
  if nm == 13 then
    ny, nm = y2 + 1, 1
  end
  local last = days_from_civil(ny, nm, 1) - days_from_civil(y2, m2, 1)
  return days_from_civil(y2, m2, math.min(d, last)) * DAY_MS + (anchor - days * DAY_MS)
end

-- The period `now` falls in, counting from `anchor` (0 before it).
local function period_index_at(period, anchor, now)
  if now < anchor then
    return 0
  end
  local ny, nm = civil_from_days(math.floor(now / DAY_MS))
  local ay, am = civil_from_days(math.floor(anchor / DAY_MS))
  local index = math.floor(((ny * 12 + nm) - (ay * 12 + am)) / period_months(period))
  if period_start(period, anchor, index) > now then
    index = index - 1
  end
  return index
end

-- Brings a recurring grant into the period `now` falls in (Grant::roll in grant.rs): what is
-- held stays held, unused credit lapses beyond the rollover cap, the amount is given again.
-- Returns the outbox entry of the reset, or nil when none was due.
local function roll_grant(account, wallet, g, now)
  if g.period == nil or not active(g, now) then
    return nil
  end
  local anchor = g.anchor or g.created
  local to = period_index_at(g.period, anchor, now)
  if to <= g.pindex then
    return nil
  end
  local unused = g.remaining - g.held
  local carried = math.min(unused, g.rollover)
  if to - g.pindex >= 2 then
    carried = math.min(g.rollover, carried + (to - g.pindex - 1) * g.amount)
  end
  local lapsed = math.max(0, unused - carried)
  local refilled = g.amount + math.max(0, carried - unused)
  g.remaining = g.remaining - lapsed + refilled
  g.pindex = to
  g.pgranted = g.remaining
  local at = fmt(period_start(g.period, anchor, to))
  local suffix = account .. '/' .. g.id .. '/' .. fmt(to)
  local entries = {}
  if lapsed > 0 then
    table.insert(entries, {
      id = 'lapse/' .. suffix, kind = 'void', account = account, wallet = wallet,
      amount = fmt(lapsed), split = g.id .. '=' .. fmt(lapsed), grant = g.id,
      reason = 'unused allowance lapsed at the end of its period', at = at,
    })
  end
  table.insert(entries, {
    id = 'refill/' .. suffix, kind = 'grant', account = account, wallet = wallet,
    amount = fmt(refilled), grant = g.id, reason = 'allowance for period ' .. fmt(to), at = at,
  })
  return {
    type = 'reset', account = account, grant = g.id, period = fmt(to), granted = fmt(g.remaining),
    entries = entries,
  }
end

-- Spend limits (limit.rs), in the account's "limits" hash: field "<key>=<value>/<per>", value
-- a JSON object of strings {key, value, per, amount, index, used, held, since}. Loaded in the
-- window `now` falls in: a new window starts with nothing used.
local function limit_window(per, now)
  if per == 'day' then
    return math.floor(now / DAY_MS)
  elseif per == 'month' then
    local y, m = civil_from_days(math.floor(now / DAY_MS))
    return (y - 1970) * 12 + (m - 1)
  end
  return 0
end

local function load_limits(base, now)
  local flat = redis.call('HGETALL', base .. 'limits')
  local limits = {}
  for i = 1, #flat, 2 do
    local l = cjson.decode(flat[i + 1])
    l.id = flat[i]
    l.amount, l.used, l.held = tonumber(l.amount), tonumber(l.used), tonumber(l.held)
    l.index, l.since = tonumber(l.index), tonumber(l.since)
    local index = limit_window(l.per, now)
    if index ~= l.index then
      l.index, l.used = index, 0
    end
    table.insert(limits, l)
  end
  table.sort(limits, function(a, b) return bytes_before(a.id, b.id) end)
  return limits
end

local function encode_limit(l)
  return cjson.encode({
    key = l.key, value = l.value, per = l.per, amount = fmt(l.amount), index = fmt(l.index),
    used = fmt(l.used), held = fmt(l.held), since = fmt(l.since),
  })
end

local function save_limits(base, limits)
  for _, l in ipairs(limits) do
    redis.call('HSET', base .. 'limits', l.id, encode_limit(l))
  end
end

local function limit_applies(l, labels)
  return labels[l.key] == l.value
end

local function limit_room(l)
  return math.max(0, l.amount - l.used - l.held)
end

-- Of the limits `counts` picks, the one with the least room (the first by id on a tie), and
-- its room; nil when none is picked.
local function tightest_limit(limits, counts)
  local tightest, room = nil, nil
  for _, l in ipairs(limits) do
    if counts(l) and (tightest == nil or limit_room(l) < room) then
      tightest, room = l, limit_room(l)
    end
  end
  return tightest, room
end

-- The most a hold or charge with `labels` may take under the limits (limit_cap in limit.rs):
-- `amount`, or the tightest limit's room if a partial hold may take it; else nil, that
-- limit's id and its room.
local function limit_cap(limits, labels, amount, min_amount)
  local tightest, room = tightest_limit(limits, function(l) return limit_applies(l, labels) end)
  if tightest == nil or room >= amount then
    return amount
  end
  if room > 0 and room >= min_amount then
    return room
  end
  return nil, tightest.id, room
end

-- Counts a new hold against the limits on its labels; returns their ids as the hold keeps
-- them (a JSON list, or '' for none).
local function hold_limits(limits, labels, amount)
  local ids = {}
  for _, l in ipairs(limits) do
    if limit_applies(l, labels) then
      l.held = l.held + amount
      table.insert(ids, l.id)
    end
  end
  if #ids == 0 then
    return ''
  end
  return cjson.encode(ids)
end

-- The limits a hold counts against, as a set of ids: those it named that were not set again
-- after it was taken.
local function hold_limit_set(h, limits)
  local named, set = {}, {}
  if h.limits ~= nil and h.limits ~= '' then
    for _, id in ipairs(cjson.decode(h.limits)) do
      named[id] = true
    end
  end
  local created = tonumber(h.created)
  for _, l in ipairs(limits) do
    if named[l.id] and l.since <= created then
      set[l.id] = true
    end
  end
  return set
end

-- Settles what a hold set aside under its limits (`held` of it; a limit set again since never
-- counted it) and counts what it charged against every limit on its labels now.
local function settle_limits(base, h, held, charged, now)
  local limits = load_limits(base, now)
  if #limits == 0 then
    return
  end
  local mine = hold_limit_set(h, limits)
  local labels = (h.labels ~= nil and h.labels ~= '') and cjson.decode(h.labels) or {}
  for _, l in ipairs(limits) do
    if mine[l.id] then
      l.held = l.held - held
    end
    if limit_applies(l, labels) then
      l.used = l.used + charged
    end
  end
  save_limits(base, limits)
end

-- Flex and debt of a wallet, stored in the account's "postpaid" hash under the wallet's name
-- as "flex cap|flex used|flex held|debt"; all zero when absent.
local function decode_postpaid(text)
  local f = split_text(text or '', '|')
  return {
    cap = tonumber(f[1]) or 0, used = tonumber(f[2]) or 0, held = tonumber(f[3]) or 0,
    debt = tonumber(f[4]) or 0,
  }
end

local function encode_postpaid(pp)
  return table.concat({ fmt(pp.cap), fmt(pp.used), fmt(pp.held), fmt(pp.debt) }, '|')
end

local function flex_room(pp)
  return math.max(0, pp.cap - pp.used - pp.held)
end

local FLEX, DEBT = '~flex', '~debt'

-- A wallet as the scripts work on it at `now`: its grants (as a list and by id), recurring
-- ones reset if due, and its flex and debt. Nothing is written until save_wallet; the resets'
-- outbox entries wait in `resets` for the script to add them (with_resets).
local function load_wallet(base, account, wallet, now)
  local key = base .. 'grants:' .. wallet
  local grants, by_id = load_grants(key)
  local w = {
    name = wallet, key = key, grants = grants, by_id = by_id, pp_key = base .. 'postpaid',
    pp = decode_postpaid(redis.call('HGET', base .. 'postpaid', wallet) or ''),
    rolled = {}, resets = {},
  }
  for _, g in ipairs(grants) do
    local reset = roll_grant(account, wallet, g, now)
    if reset then
      table.insert(w.rolled, { g.id, 0 })
      table.insert(w.resets, reset)
      w.refilled = true
    end
  end
  return w
end

-- `entries` with the wallet's resets first: they happened before the operation.
local function with_resets(w, entries)
  for i, reset in ipairs(w.resets) do
    table.insert(entries, i, reset)
  end
  w.resets = {}
  return entries
end

-- Writes back the grants named in `split` and those reset, and the wallet's flex and debt.
local function save_wallet(w, split)
  for _, p in ipairs(w.rolled) do
    redis.call('HSET', w.key, p[1], encode_grant(w.by_id[p[1]]))
  end
  for _, p in ipairs(split) do
    local g = w.by_id[p[1]]
    if g then
      redis.call('HSET', w.key, g.id, encode_grant(g))
    end
  end
  local pp = w.pp
  if pp.cap == 0 and pp.used == 0 and pp.held == 0 and pp.debt == 0 then
    redis.call('HDEL', w.pp_key, w.name)
  else
    redis.call('HSET', w.pp_key, w.name, encode_postpaid(pp))
  end
end

local function from_grants(w, feature, now)
  local sum = 0
  for _, g in ipairs(w.grants) do
    if active(g, now) and admits(g, feature) then
      sum = sum + spendable(g)
    end
  end
  return sum
end

-- The most a wallet could ever hold (Grant::bound_minor in grant.rs): what remains of its
-- active grants, twice amount and rollover for a recurring one, and its flex cap.
local function wallet_bound(w, now)
  local bound = w.pp.cap
  for _, g in ipairs(w.grants) do
    if active(g, now) then
      if g.period then
        bound = bound + 2 * (g.amount + g.rollover)
      else
        bound = bound + g.remaining
      end
    end
  end
  return bound
end

-- What a new hold or charge for `feature` could take: grants that admit it, then flex, less
-- debt.
local function available_for(w, feature, now)
  return math.max(0, from_grants(w, feature, now) + flex_room(w.pp) - w.pp.debt)
end

-- The same for a feature every grant admits.
local function wallet_available(w, now)
  local sum = 0
  for _, g in ipairs(w.grants) do
    if active(g, now) then
      sum = sum + spendable(g)
    end
  end
  return math.max(0, sum + flex_room(w.pp) - w.pp.debt)
end

-- Splits `amount` over the grants that may pay for `feature`, in consumption order, then flex.
-- Returns the split (a list of {grant id, amount}), or nil with the reason of the denial and
-- what is available.
local function plan_draw(w, feature, now, amount)
  local order, elsewhere = {}, false
  for _, g in ipairs(w.grants) do
    if active(g, now) then
      if admits(g, feature) then
        table.insert(order, g)
      elseif spendable(g) > 0 then
        elsewhere = true
      end
    end
  end
  local available = available_for(w, feature, now)
  if available < amount then
    if from_grants(w, feature, now) + flex_room(w.pp) == 0 and elsewhere then
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
  if left > 0 then
    table.insert(split, { FLEX, left })
  end
  return split, nil, available
end

-- Adds `sign` times each portion to what its grant (or flex) holds.
local function adjust_held(w, split, sign)
  for _, p in ipairs(split) do
    if p[1] == FLEX then
      w.pp.held = w.pp.held + sign * p[2]
    else
      local g = w.by_id[p[1]]
      g.held = g.held + sign * p[2]
    end
  end
end

-- Charges each portion: from its grant's remaining amount, or to flex used or debt.
local function take_remaining(w, split)
  for _, p in ipairs(split) do
    if p[1] == FLEX then
      w.pp.used = w.pp.used + p[2]
    elseif p[1] == DEBT then
      w.pp.debt = w.pp.debt + p[2]
    else
      local g = w.by_id[p[1]]
      g.remaining = g.remaining - p[2]
    end
  end
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

-- Adds the portions of `extra` to `split`, one portion per grant, keeping the order in which
-- grants were first taken.
local function merge_split(split, extra)
  local index = {}
  for i, p in ipairs(split) do
    index[p[1]] = i
  end
  for _, p in ipairs(extra) do
    if index[p[1]] then
      split[index[p[1]]][2] = split[index[p[1]]][2] + p[2]
    else
      table.insert(split, { p[1], p[2] })
      index[p[1]] = #split
    end
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

local function hash_to_table(flat)
  local t = {}
  for i = 1, #flat, 2 do
    t[flat[i]] = flat[i + 1]
  end
  return t
end

-- Events ----------------------------------------------------------------------------------
-- What a change caused, as src/store/memory.rs (wallet_events) and src/domain/alert.rs decide
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
