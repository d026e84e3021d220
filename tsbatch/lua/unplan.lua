-- Undo plan.lua when the message could not be sent, so a later run enqueues the chunk again.
-- KEYS: chunk, job   ARGV: job_id
if redis.call('HGET', KEYS[1], 'state') == 'queued' and redis.call('HGET', KEYS[1], 'job') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[2], 'enqueued', -1)
  return 1
end
return 0
