-- Move a window to its next generation only if it is still at the one the caller saw: two verifiers
-- (a tick's recheck and a person's `windows verify`) that find the same late data re-run it once.
-- KEYS: the job's generation hash (window start -> generation)
-- ARGV: window start, the generation the caller saw
-- Returns: the new generation, or -1 if another caller moved it first
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if current ~= tonumber(ARGV[2]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[1], current + 1)
return current + 1
