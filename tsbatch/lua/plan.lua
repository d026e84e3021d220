-- Record a unit of work in the ledger (the outbox) before its message is published, and count it in
-- the job. A unit already planned or in flight is counted once per job and published again (harmless:
-- the copy meets the claim); a committed one is skipped; a dead-lettered one is reported unless the
-- job retries dead units.
-- KEYS: unit, unit_jobs, job, outbox
-- ARGV: job_id, descriptor (JSON), now_ms, due_ms (when the sweeper may look), retry_dead ('1' or '0'),
--       unit key
-- Returns: new | planned (publish it) | committed | dead (do not)
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'committed' then
  redis.call('HINCRBY', KEYS[3], 'skipped', 1)
  return 'committed'
end
if state == 'dead' then
  if ARGV[5] ~= '1' then
    redis.call('HINCRBY', KEYS[3], 'dead_before', 1)
    return 'dead'
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  redis.call('HINCRBY', KEYS[3], 'retried_dead', 1)
  state = false
end
if not state then
  redis.call('HSET', KEYS[1], 'state', 'planned', 'desc', ARGV[2], 'job', ARGV[1], 'planned_ms', ARGV[3],
    'pub_ms', ARGV[3], 'attempts', 0, 'failures', 0)
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[3], 'units', 1)
  redis.call('ZADD', KEYS[4], ARGV[4], ARGV[6])
  return 'new'
end
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[3], 'units', 1)
end
redis.call('HSET', KEYS[1], 'pub_ms', ARGV[3])  -- the producer publishes it again at once
return 'planned'
