-- Spend limits (limit.rs): per-label caps per day, month or in total.

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
