-- May a write to this route go ahead? One probe at a time is let through once the cool-down is over.
-- KEYS: breaker   ARGV: now_ms, probe_ttl_ms
-- Returns {verdict, wait_ms, kind, reason, failures}: closed | probe | open
local state = redis.call('HGET', KEYS[1], 'state')
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
if state ~= 'open' then
  return {'closed', 0, '', '', failures}
end
local now = tonumber(ARGV[1])
local kind = redis.call('HGET', KEYS[1], 'kind') or ''
local reason = redis.call('HGET', KEYS[1], 'reason') or ''
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if now < open_until then
  return {'open', open_until - now, kind, reason, failures}
end
local probe_until = tonumber(redis.call('HGET', KEYS[1], 'probe_until') or '0')
if now < probe_until then
  return {'open', probe_until - now, kind, reason, failures}
end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[2]))
return {'probe', 0, kind, reason, failures}
