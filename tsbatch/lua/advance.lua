-- Move a scheduler mark forward, never back: several ticks (two beats, a tick delivered twice) may
-- compute the same mark at once, and the slower one must not undo the faster one's progress.
-- KEYS: the job's window state hash
-- ARGV: field, value (an integer)
-- Returns: the field's value afterwards
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
local value = tonumber(ARGV[2])
if current == nil or value > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return value
end
return current
