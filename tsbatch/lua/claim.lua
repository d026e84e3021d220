-- Claim a chunk with a lease and a fresh fencing token.
-- KEYS: chunk, lease, fence, stats   ARGV: worker, lease_ttl_ms, job_id
-- Returns {status, token_or_pttl}: committed | dead | busy (pttl of the holder's lease) | claimed (token)
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'committed' or state == 'dead' then
  redis.call('HINCRBY', KEYS[4], 'redelivered_done', 1)
  return {state, 0}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[4], 'busy', 1)
  return {'busy', redis.call('PTTL', KEYS[2])}
end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], token .. '|' .. ARGV[1], 'PX', ARGV[2])
if not state then
  redis.call('HSET', KEYS[1], 'state', 'queued', 'job', ARGV[3])
end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HINCRBY', KEYS[4], 'claims', 1)
return {'claimed', token}
