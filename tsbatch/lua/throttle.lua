-- Hold every worker's writes to a route until resume_ms (never shortening a pause already set).
-- KEYS: throttle   ARGV: resume_ms, ttl_ms
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
