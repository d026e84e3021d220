-- Dead-letter a whole unit, fenced by the lease when one is held, and count it in every job that
-- planned it. The record keeps its descriptor so that a later run can retry it (--retry-dead).
-- KEYS: unit, lease, unit_jobs, dlq, outbox, stats
-- ARGV: holder ('' when none), now_ms, retention_s, dlq_maxlen, job key prefix, unit key,
--       then field/value pairs of the entry
-- Returns 1, or 0 if fenced out or already done.
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[6], 'dead_fenced', 1)
  return 0
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'committed' or state == 'dead' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'dead', 'dead_ms', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if ARGV[1] ~= '' then
  redis.call('DEL', KEYS[2])
end
redis.call('ZREM', KEYS[5], ARGV[6])
for _, job_id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  redis.call('HINCRBY', ARGV[5] .. job_id, 'dead', 1)
  redis.call('HSET', ARGV[5] .. job_id, 'last_ms', ARGV[2])
  redis.call('PUBLISH', ARGV[5] .. job_id, 'dead')  -- `produce --wait` wakes now instead of polling
end
redis.call('DEL', KEYS[3])
local entry = {}
for i = 7, #ARGV do
  table.insert(entry, ARGV[i])
end
local before = redis.call('XLEN', KEYS[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', unpack(entry))
if before + 1 > redis.call('XLEN', KEYS[4]) then
  redis.call('HINCRBY', KEYS[6], 'dlq_trimmed', before + 1 - redis.call('XLEN', KEYS[4]))
end
redis.call('HINCRBY', KEYS[6], 'dead_letters', 1)
return 1
