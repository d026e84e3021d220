-- Dead-letter a whole chunk, fenced by the lease when one is held.
-- KEYS: chunk, lease, job, dlq   ARGV: holder ('' when none), now_ms, then field/value pairs of the entry
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'committed' or state == 'dead' then
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'dead', 'dead_ms', ARGV[2])
redis.call('PERSIST', KEYS[1])
if ARGV[1] ~= '' then
  redis.call('DEL', KEYS[2])
end
redis.call('HINCRBY', KEYS[3], 'dead', 1)
redis.call('HSET', KEYS[3], 'last_ms', ARGV[2])
local entry = {}
for i = 3, #ARGV do
  table.insert(entry, ARGV[i])
end
redis.call('XADD', KEYS[4], '*', unpack(entry))
return 1
