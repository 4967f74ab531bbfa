-- The basics every creditgate script shares, first of the library's files (see SHARED in
-- scripts.rs): numbers, the clock, text.
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
  local find, sub = string.find, string.sub
  local start, n = 1, 0
  while true do
    local i = find(text, sep, start, true)
    n = n + 1
    if not i then
      out[n] = sub(text, start)
      return out
    end
    out[n] = sub(text, start, i - 1)
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
