-- keystile: check and spend every limit of one request atomically
-- (sliding window counter: two counters per limit, as limits' own script).
--
-- KEYS[2i-1], KEYS[2i]  limit i's previous and current window counters; the
--            current one lives two windows and becomes the previous one when
--            less than a window of it is left.
-- ARGV[1]    "1" to only look (peek), "0" to count the request.
-- ARGV[2]    R: the first R limits get one request back (a refund), whatever
--            the answer, and are left out of it.
-- ARGV[3]    G: the next G limits are guards: each must have room, none is
--            spent. The rest are counted, all or nothing.
-- ARGV[2+2i] limit i's amount;  ARGV[3+2i]  limit i's window in ms.
-- Returns {admitted, now_ms, guarded, remaining, reset_ms, ...} for the
-- guards, then the counted limits. guarded is 1 when a guard refused.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local peek = ARGV[1] == '1'
local r, g = tonumber(ARGV[2]), tonumber(ARGV[3])
local n = #KEYS / 2
local pc, pt, cc, ct, weighted = {}, {}, {}, {}, {}
local admitted, guarded = true, false
local function pttl(key)
  return math.max(0, tonumber(redis.call('PTTL', key)))
end
for i = 1, r do
  -- The hit to give back is in the current window, or has just become
  -- part of the previous one.
  if (tonumber(redis.call('GET', KEYS[2 * i])) or 0) > 0 then
    redis.call('DECR', KEYS[2 * i])
  elseif (tonumber(redis.call('GET', KEYS[2 * i - 1])) or 0) > 0 then
    redis.call('DECR', KEYS[2 * i - 1])
  end
end
for i = r + 1, n do
  local prev, cur = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, window = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local cur_ttl = pttl(cur)
  if cur_ttl > 0 and cur_ttl < window then
    -- The current window is over: it becomes the previous one.
    redis.call('RENAME', cur, prev)
    redis.call('SET', cur, 0, 'PX', cur_ttl + window)
  end
  pc[i] = tonumber(redis.call('GET', prev)) or 0
  pt[i] = pttl(prev)
  cc[i] = tonumber(redis.call('GET', cur)) or 0
  ct[i] = pttl(cur)
  weighted[i] = math.floor(pc[i] * pt[i] / window) + cc[i]
  if weighted[i] + 1 > limit then
    admitted = false
    if i <= r + g then guarded = true end
  end
end
local spend = admitted and not peek
local out = {admitted and 1 or 0, now, guarded and 1 or 0}
for i = r + 1, n do
  local cur = KEYS[2 * i]
  local limit, window = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if spend and i > r + g then
    if redis.call('EXISTS', cur) == 1 then
      redis.call('INCR', cur)
    else
      redis.call('SET', cur, 1, 'PX', window * 2)
      ct[i] = window * 2
    end
    cc[i] = cc[i] + 1
    weighted[i] = weighted[i] + 1
  end
  -- Reset as limits reports it: when the next request's worth drains.
  local reset_in = nil
  if pc[i] > 0 then reset_in = pt[i] % (window / pc[i]) end
  if cc[i] > 0 then
    -- Time until the current window shifts (limits takes ct % window,
    -- which reads 0 on a fresh counter; this is the same instant otherwise).
    -- At ct == window it shifts now: 0, not a whole window more.
    local c = ct[i] >= window and ct[i] - window or ct[i]
    if reset_in == nil or c < reset_in then reset_in = c end
  end
  out[#out + 1] = limit - weighted[i]
  out[#out + 1] = now + math.ceil(reset_in or 0)
end
return out
