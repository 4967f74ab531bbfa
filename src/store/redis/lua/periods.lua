-- Recurring grants (period.rs): calendar periods and the reset of an allowance at a period
-- boundary.

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
  local entries = {}
  if lapsed > 0 then
    table.insert(entries, {
      id = entry_id_lapse(account, g.id, to), kind = 'void', account = account, wallet = wallet,
      amount = fmt(lapsed), split = g.id .. '=' .. fmt(lapsed), grant = g.id,
      reason = 'unused allowance lapsed at the end of its period', at = at,
    })
  end
  table.insert(entries, {
    id = entry_id_refill(account, g.id, to), kind = 'grant', account = account, wallet = wallet,
    amount = fmt(refilled), grant = g.id, reason = 'allowance for period ' .. fmt(to), at = at,
  })
  return {
    type = 'reset', account = account, grant = g.id, period = fmt(to), granted = fmt(g.remaining),
    entries = entries,
  }
end
