-- keystile: check and spend every limit of one request atomically (fixed window).
--
-- KEYS[i]    one counter per limit; its window starts at its first hit and
--            lasts until the key expires (INCR with expiry, as limits does).
-- ARGV[1]    "1" to only look (peek), "0" to count the request.
-- ARGV[2i]   limit i's amount;  ARGV[2i+1]  limit i's window in ms.
-- Returns {admitted, now_ms, remaining_1, reset_ms_1, remaining_2, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local peek = ARGV[1] == '1'
local counts, ttls = {}, {}
local admitted = true
for i = 1, #KEYS do
  ttls[i] = tonumber(redis.call('PTTL', KEYS[i]))
  counts[i] = 0
  if ttls[i] > 0 then counts[i] = tonumber(redis.call('GET', KEYS[i])) or 0 end
  if counts[i] >= tonumber(ARGV[2 * i]) then admitted = false end
end
local spend = admitted and not peek
local out = {admitted and 1 or 0, now}
for i = 1, #KEYS do
  local limit, window = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  if spend then
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
