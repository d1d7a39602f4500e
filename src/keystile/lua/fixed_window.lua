-- keystile: check and spend every limit of one request atomically (fixed window).
--
-- KEYS[i]    one counter per limit; its window starts at its first hit and
--            lasts until the key expires (INCR with expiry, as limits does).
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
for i = 1, r do
  if tonumber(redis.call('PTTL', KEYS[i])) > 0 and (tonumber(redis.call('GET', KEYS[i])) or 0) > 0 then
    redis.call('DECR', KEYS[i])
  end
end
local counts, ttls = {}, {}
local admitted, guarded = true, false
for i = r + 1, #KEYS do
  ttls[i] = tonumber(redis.call('PTTL', KEYS[i]))
  counts[i] = 0
  if ttls[i] > 0 then counts[i] = tonumber(redis.call('GET', KEYS[i])) or 0 end
  if counts[i] >= tonumber(ARGV[2 + 2 * i]) then
    admitted = false
    if i <= r + g then guarded = true end
  end
end
local spend = admitted and not peek
local out = {admitted and 1 or 0, now, guarded and 1 or 0}
for i = r + 1, #KEYS do
  local limit, window = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  if spend and i > r + g then
    if ttls[i] > 0 then
      redis.call('INCR', KEYS[i])
    else
      -- A new window (or a key that lost its expiry): start it now.
      redis.call('SET', KEYS[i], 1, 'PX', window)
      ttls[i] = window
    end
    counts[i] = counts[i] + 1
  end
  out[#out + 1] = limit - counts[i]
  out[#out + 1] = now + (ttls[i] > 0 and ttls[i] or window)
end
return out
