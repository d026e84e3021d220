-- Commit a unit, fenced by the lease, count it in every job that planned it, and dead-letter its
-- rejected lines in the same step, so that a crash can neither lose them nor record them twice.
-- The same step appends the unit's audit record (its descriptor and what was written) to the audit
-- stream, trimmed to the ledger's retention: one record per commit, never two.
-- KEYS: unit, lease, unit_jobs, stats, dlq, outbox, audit
-- ARGV: holder, record (JSON object), rejected (JSON array of {line, reason, raw, length, sha256}),
--       now_ms, dlq_common (JSON), retention_s, dlq_maxlen, job key prefix, unit key
-- Returns 1, or 0 if fenced out.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
    return 1  -- committed by this very holder: the client retried after the reply was lost
  end
  redis.call('HINCRBY', KEYS[4], 'commit_fenced', 1)
  return 0
end
local rec = cjson.decode(ARGV[2])
local desc = redis.call('HGET', KEYS[1], 'desc') or ''
local fields = {'state', 'committed', 'committed_ms', ARGV[4], 'holder', ARGV[1]}
for k, v in pairs(rec) do
  table.insert(fields, k)
  table.insert(fields, tostring(v))
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('HDEL', KEYS[1], 'desc')
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[6], ARGV[9])
local jobs = redis.call('SMEMBERS', KEYS[3])
redis.call('XADD', KEYS[7], 'MINID', '~', tonumber(ARGV[4]) - tonumber(ARGV[6]) * 1000, '*',
  'key', ARGV[9], 'jobs', table.concat(jobs, ','), 'desc', desc, 'record', ARGV[2], 'holder', ARGV[1],
  'committed_ms', ARGV[4])
for _, job_id in ipairs(jobs) do
  local job = ARGV[8] .. job_id
  redis.call('HINCRBY', job, 'committed', 1)
  redis.call('HINCRBY', job, 'points', rec['points'])
  redis.call('HINCRBY', job, 'bytes', rec['bytes'])
  redis.call('HINCRBY', job, 'rejected', rec['rejected'])
  redis.call('HSET', job, 'last_ms', ARGV[4])
  redis.call('PUBLISH', job, 'committed')  -- `produce --wait` wakes now instead of polling
end
redis.call('DEL', KEYS[3])
redis.call('HINCRBY', KEYS[4], 'commits', 1)
local common = cjson.decode(ARGV[5])
local before = redis.call('XLEN', KEYS[5])
local added = 0
for _, r in ipairs(cjson.decode(ARGV[3])) do
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[7], '*', 'kind', 'line', 'reason', 'rejected_line',
    'message', r['reason'], 'line', tostring(r['line']), 'raw', r['raw'], 'length', tostring(r['length']),
    'sha256', r['sha256'], 'job', common['job'], 'key', common['key'], 'path', common['path'],
    'route', common['route'], 'ts_ms', ARGV[4])
  added = added + 1
end
local trimmed = before + added - redis.call('XLEN', KEYS[5])
if trimmed > 0 then
  redis.call('HINCRBY', KEYS[4], 'dlq_trimmed', trimmed)
end
return 1
