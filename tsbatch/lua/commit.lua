-- Commit a chunk, fenced by the lease, and dead-letter its rejected lines in the same step, so that a
-- crash can neither lose them nor record them twice.
-- KEYS: chunk, lease, job, stats, dlq
-- ARGV: holder, record (JSON object), rejected (JSON array of {line, reason, raw}), now_ms, dlq_common (JSON)
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[4], 'commit_fenced', 1)
  return 0
end
local rec = cjson.decode(ARGV[2])
local fields = {'state', 'committed', 'committed_ms', ARGV[4]}
for k, v in pairs(rec) do
  table.insert(fields, k)
  table.insert(fields, tostring(v))
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PERSIST', KEYS[1])
redis.call('DEL', KEYS[2])
redis.call('HINCRBY', KEYS[3], 'committed', 1)
redis.call('HINCRBY', KEYS[3], 'points', rec['points'])
redis.call('HINCRBY', KEYS[3], 'bytes', rec['bytes'])
redis.call('HINCRBY', KEYS[3], 'rejected', rec['rejected'])
redis.call('HSET', KEYS[3], 'last_ms', ARGV[4])
redis.call('HINCRBY', KEYS[4], 'commits', 1)
local common = cjson.decode(ARGV[5])
for _, r in ipairs(cjson.decode(ARGV[3])) do
  redis.call('XADD', KEYS[5], '*', 'kind', 'line', 'reason', 'rejected_line', 'message', r['reason'],
    'line', tostring(r['line']), 'raw', r['raw'], 'job', common['job'], 'key', common['key'],
    'path', common['path'], 'route', common['route'], 'ts_ms', ARGV[4])
end
return 1
