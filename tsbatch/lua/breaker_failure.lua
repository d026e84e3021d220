-- Count a failed write; open the breaker at the threshold, or again at once when a probe fails.
-- KEYS: breaker   ARGV: now_ms, threshold, cooldown_ms, kind, reason
-- Returns 1 if this failure opened (or re-opened) the breaker.
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
local was_open = redis.call('HGET', KEYS[1], 'state') == 'open'
redis.call('HSET', KEYS[1], 'kind', ARGV[4], 'reason', ARGV[5])
if was_open or failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', tonumber(ARGV[1]) + tonumber(ARGV[3]),
    'probe_until', 0)
  redis.call('HINCRBY', KEYS[1], 'opened', 1)
  return 1
end
return 0
