-- keystile: check and spend every limit of one request atomically
-- (sliding window counter: two counters per limit, as limits' own script).
--
-- KEYS[2i-1], KEYS[2i]  limit i's previous and current window counters; the
--            current one lives two windows and becomes the previous one when
--            less than a window of it is left.
-- ARGV[1]    "1" to only look (peek), "0" to count the request.
-- ARGV[2i]   limit i's amount;  ARGV[2i+1]  limit i's window in ms.
-- Returns {admitted, now_ms, remaining_1, reset_ms_1, remaining_2, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local peek = ARGV[1] == '1'
local n = #KEYS / 2
local pc, pt, cc, ct, weighted = {}, {}, {}, {}, {}
local admitted = true
local function pttl(key)
  return math.max(0, tonumber(redis.call('PTTL', key)))
end
for i = 1, n do
  local prev, cur = KEYS[2 * i - 1], KEYS[2 * i]
  local limit, window = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
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
  if weighted[i] + 1 > limit then admitted = false end
end
local spend = admitted and not peek
local out = {admitted and 1 or 0, now}
for i = 1, n do
  local cur = KEYS[2 * i]
  local limit, window = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if spend then
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
    local c = ct[i] > window and ct[i] - window or ct[i]
    if reset_in == nil or c < reset_in then reset_in = c end
  end
  out[#out + 1] = limit - weighted[i]
  out[#out + 1] = now + math.ceil(reset_in or 0)
end
return out
