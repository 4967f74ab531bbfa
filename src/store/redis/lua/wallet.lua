-- A wallet (grant.rs, hold.rs): its grants, flex and debt loaded together, what is
-- spendable, how a hold or charge draws on it (the split per grant), and writing it back.

-- Flex and debt of a wallet, stored in the account's "postpaid" hash under the wallet's name
-- as "flex cap|flex used|flex held|debt"; all zero when absent.
local function decode_postpaid(text)
  local cap, used, held, debt = string.match(text or '', '^([^|]*)|?([^|]*)|?([^|]*)|?([^|]*)')
  return {
    cap = tonumber(cap) or 0, used = tonumber(used) or 0, held = tonumber(held) or 0,
    debt = tonumber(debt) or 0,
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
  local pp_text = redis.call('HGET', base .. 'postpaid', wallet) or ''
  local w = {
    name = wallet, key = key, grants = grants, by_id = by_id, pp_key = base .. 'postpaid',
    pp = decode_postpaid(pp_text), pp_text = pp_text, rolled = {}, resets = {},
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

-- Writes back the grants named in `split` and those reset since the last save, and the wallet's
-- flex and debt if they changed.
local function save_wallet(w, split)
  for _, p in ipairs(w.rolled) do
    redis.call('HSET', w.key, p[1], encode_grant(w.by_id[p[1]]))
  end
  w.rolled = {}
  for _, p in ipairs(split) do
    local g = w.by_id[p[1]]
    if g then
      redis.call('HSET', w.key, g.id, encode_grant(g))
    end
  end
  local pp = w.pp
  local pp_text = ''
  if pp.cap ~= 0 or pp.used ~= 0 or pp.held ~= 0 or pp.debt ~= 0 then
    pp_text = encode_postpaid(pp)
  end
  if pp_text ~= w.pp_text then
    if pp_text == '' then
      redis.call('HDEL', w.pp_key, w.name)
    else
      redis.call('HSET', w.pp_key, w.name, pp_text)
    end
    w.pp_text = pp_text
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
  local split, n = {}, 0
  for id, amount in string.gmatch(text or '', '([^,=]+)=([^,]*)') do
    n = n + 1
    split[n] = { id, tonumber(amount) }
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
