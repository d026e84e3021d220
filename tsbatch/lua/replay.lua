-- Put a dead-lettered (or forgotten) chunk back in play under a new job; queued or committed ones stay.
-- KEYS: chunk, job   ARGV: job_id, inflight_ttl_s
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'dead' then
  return state
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'job', ARGV[1])
redis.call('HDEL', KEYS[1], 'dead_ms')
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], 'enqueued', 1)
return 'new'
