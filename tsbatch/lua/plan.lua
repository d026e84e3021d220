-- Mark a chunk as queued unless it is already queued, committed or dead-lettered.
-- KEYS: chunk, job   ARGV: job_id, inflight_ttl_s
local state = redis.call('HGET', KEYS[1], 'state')
if state then
  redis.call('HINCRBY', KEYS[2], 'skipped', 1)
  return state
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'job', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], 'enqueued', 1)
return 'new'
