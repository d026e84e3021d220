-- Give a lease up while it is still ours, and say when the unit is due again: a deferred unit (a
-- Celery retry with a countdown) is swept only if its retry has not claimed it by then.
-- KEYS: lease, unit, outbox
-- ARGV: holder, due_ms, unit key, failure ('' for none: a deferral that is not the unit's fault,
--       whose attempt is given back), now_ms
-- Returns 1 if released, 0 if the lease was not ours.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
if ARGV[4] == '' then
  redis.call('HINCRBY', KEYS[2], 'attempts', -1)
else
  redis.call('HINCRBY', KEYS[2], 'failures', 1)
  local history = cjson.decode(redis.call('HGET', KEYS[2], 'history') or '[]')
  table.insert(history, ARGV[5] .. ' ' .. ARGV[4])
  while #history > 10 do
    table.remove(history, 1)
  end
  redis.call('HSET', KEYS[2], 'history', cjson.encode(history))
end
return 1
