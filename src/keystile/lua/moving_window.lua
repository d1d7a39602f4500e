-- keystile: check and spend every limit of one request atomically (moving window).
--
-- KEYS[i]    one list per limit, newest timestamp (ms) first, as limits' own
--            moving window keeps it; at most the limit's amount long.
-- ARGV[1]    "1" to only look (peek), "0" to count the request.
-- ARGV[2]    R: the first R limits get one request back (their newest hit),
--            whatever the answer, and are left out of it.
-- ARGV[3]    G: the next G limits are guards: each must have room, none is
--            spent. The rest are counted, all or nothing.
-- ARGV[2+2i] limit i's amount;  ARGV[3+2i]  limit i's window in ms.
-- Returns {admitted, now_ms, guarded, remaining, reset_ms, ...} for the
-- guards, then the counted limits. guarded is 1 when a guard refused.
-- Time is the server's (TIME), so every process counts on one clock.
--
-- A request that counts also drops the entries that have left the window,
-- so the list holds only the window's hits: the next request then finds
-- its oldest entry (the tail) still inside the window and counts the list
-- with two calls, instead of searching it with a dozen.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local peek = ARGV[1] == '1'
local r, g = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, r do
  redis.call('LPOP', KEYS[i])
end
local counts, oldest = {}, {}
local admitted, guarded = true, false
for i = r + 1, #KEYS do
  local limit = tonumber(ARGV[2 + 2 * i])
  local floor_ts = now - tonumber(ARGV[3 + 2 * i])
  local len = math.min(redis.call('LLEN', KEYS[i]), limit)
  local last = -1  -- index of the oldest entry still inside the window
  if len > 0 then
    local tail = tonumber(redis.call('LINDEX', KEYS[i], len - 1))
    if tail > floor_ts then
      last, oldest[i] = len - 1, tail
    else
      -- Binary search for the last entry still inside the window.
      local lo, hi = 0, len - 2
      while lo <= hi do
        local mid = math.floor((lo + hi) / 2)
        local ts = tonumber(redis.call('LINDEX', KEYS[i], mid))
        if ts > floor_ts then
          last, oldest[i], lo = mid, ts, mid + 1
        else
          hi = mid - 1
        end
      end
    end
  end
  counts[i] = last + 1
  if counts[i] >= limit then
    admitted = false
    if i <= r + g then guarded = true end
  end
end
local spend = admitted and not peek
local out = {admitted and 1 or 0, now, guarded and 1 or 0}
for i = r + 1, #KEYS do
  local limit, window = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if spend and i > r + g then
    redis.call('LPUSH', KEYS[i], now)
    -- Keep the new hit and the counts[i] hits inside the window; never
    -- more than the amount (counts[i] < limit here).
    redis.call('LTRIM', KEYS[i], 0, counts[i])
    redis.call('PEXPIRE', KEYS[i], window)
    counts[i] = counts[i] + 1
    oldest[i] = oldest[i] or now
  end
  out[#out + 1] = limit - counts[i]
  out[#out + 1] = (oldest[i] or now) + window
end
return out
