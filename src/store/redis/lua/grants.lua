-- Grants and the consumption order (grant.rs): how a grant is stored, which grants are
-- active and admit a feature, and in which order they are spent.

-- A grant is stored as one hash field, its id, with the value
-- kind|priority|amount|remaining|held|expires_at|created_at|voided_at|recurrence|period|features
-- where recurrence is '' or "month|year,anchor (or ''),rollover max", period is the index of
-- the period the remaining amount belongs to (with ",<what it had at the period's start>" for a
-- recurring grant), and features are comma-separated. Grants written before recurrence have no
-- recurrence and period fields.
-- One pattern per layout, so a grant is taken apart by one call instead of a field at a time
-- (which cost Redis about 2 µs a grant, for every grant of the wallet on every operation).
local GRANT_FIELDS = '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|'
local GRANT_RECURRING = GRANT_FIELDS .. '([^|]*)|([^|]*)|([^|]*)$'
local GRANT_BEFORE_RECURRENCE = GRANT_FIELDS .. '([^|]*)$'

local function decode_grant(id, text)
  local kind, priority, amount, remaining, held, expires, created, voided, recur_text, period,
  features_text = string.match(text, GRANT_RECURRING)
  local period_index, period_granted = 0, nil
  if kind == nil then
    kind, priority, amount, remaining, held, expires, created, voided, features_text =
      string.match(text, GRANT_BEFORE_RECURRENCE)
    recur_text = ''
  else
    local index, granted = string.match(period, '^(%d+),?(%d*)$')
    period_index, period_granted = tonumber(index), tonumber(granted)
  end
  local g = {
    id = id,
    kind = kind,
    priority = tonumber(priority),
    amount = tonumber(amount),
    remaining = tonumber(remaining),
    held = tonumber(held),
    expires = tonumber(expires),
    created = tonumber(created),
    voided = tonumber(voided),
    features_text = features_text or '',
    features = {},
    scoped = false,
    recur_text = recur_text,
    pindex = period_index,
    pgranted = period_granted,
  }
  if recur_text ~= '' then
    local period_name, anchor, rollover = string.match(recur_text, '^([^,]*),([^,]*),([^,]*)$')
    g.period = period_name
    g.anchor = tonumber(anchor)
    g.rollover = tonumber(rollover)
  end
  if g.features_text ~= '' then
    for feature in string.gmatch(g.features_text, '[^,]+') do
      g.features[feature] = true
      g.scoped = true
    end
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
