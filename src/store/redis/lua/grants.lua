-- Grants and the consumption order (grant.rs): how a grant is stored, which grants are
-- active and admit a feature, and in which order they are spent.

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
