-- Claim a unit with a lease and a fresh fencing token, counting the attempt durably.
-- KEYS: unit, lease, fence, stats, outbox, claimed_mark
-- ARGV: worker, lease_ttl_ms, now_ms, max_attempts, grace_ms (the sweeper's look after the lease could
--       have lapsed), descriptor (JSON), unit key, now as ISO 8601 (for the history)
-- Returns {status, token_or_pttl, attempts, failures}:
--   committed | dead           done already: ack the message
--   busy                       another holder's lease is live (its pttl): ack, the sweeper covers it
--   claimed                    go ahead with the token
--   poison                     claimed, but over max_attempts: dead-letter it with the token
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'committed' or state == 'dead' then
  redis.call('HINCRBY', KEYS[4], 'redelivered_done', 1)
  return {state, 0, 0, 0}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('HINCRBY', KEYS[4], 'busy', 1)
  return {'busy', redis.call('PTTL', KEYS[2]), 0, 0}
end
if not state then
  -- A message whose unit the ledger does not know (sent around the producer, or its record lost with
  -- the last second of an AOF): adopt it, so it is tracked, swept and committed like any other.
  redis.call('HSET', KEYS[1], 'state', 'planned', 'desc', ARGV[6], 'planned_ms', ARGV[3], 'pub_ms', ARGV[3],
    'adopted', 1)
  redis.call('HINCRBY', KEYS[4], 'adopted', 1)
end
local token = redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[2], token .. '|' .. ARGV[1], 'PX', ARGV[2])
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if attempts > 1 then
  -- A claim after another that ended without a commit: say who had it, so that a poison dead letter
  -- tells whose processes a unit took down (a killed claim records nothing else).
  local history = cjson.decode(redis.call('HGET', KEYS[1], 'history') or '[]')
  table.insert(history, ARGV[8] .. ' claim ' .. attempts .. ' by ' .. ARGV[1])
  while #history > 10 do
    table.remove(history, 1)
  end
  redis.call('HSET', KEYS[1], 'history', cjson.encode(history))
end
redis.call('HSET', KEYS[1], 'claimed_ms', ARGV[3])
local failures = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
-- The sweeper looks again once this lease could have lapsed.
redis.call('ZADD', KEYS[5], tonumber(ARGV[3]) + tonumber(ARGV[2]) + tonumber(ARGV[5]), ARGV[7])
-- Messages are consumed in publishing order: the newest publication claimed so far tells the sweeper
-- which unclaimed units' messages are lost (see sweep.lua).
local published = tonumber(redis.call('HGET', KEYS[1], 'pub_ms') or '0')
if published > tonumber(redis.call('GET', KEYS[6]) or '0') then
  redis.call('SET', KEYS[6], published)
end
redis.call('HINCRBY', KEYS[4], 'claims', 1)
if attempts > tonumber(ARGV[4]) then
  return {'poison', token, attempts, failures}
end
return {'claimed', token, attempts, failures}
