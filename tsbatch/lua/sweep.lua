-- The outbox sweep: return the descriptors of units whose message is overdue, and push each one's
-- next look into the future, so that concurrent sweepers do not publish the same unit twice in a row
-- (and a sweeper that dies after this step has its units swept again later).
-- KEYS: outbox, queue (the broker's list), claimed_mark, stats
-- ARGV: now_ms, limit, republish_after_ms, unit key prefix, lease key prefix, grace_ms (a never-claimed
--       unit's margin over the newest claim), lease_grace_ms (a look this long after a live lease lapses)
-- A due unit is overdue when nobody holds its lease and its last published message cannot be waiting:
--   - it was claimed since it was last published: its message was taken, and the unit is due, so the
--     copy that should have come back (a Celery retry, a redelivery) did not: its holder died;
--   - the broker queue is empty (the message was lost, or sits with a worker that died holding it), or
--   - a message published after it (by more than grace_ms) has been claimed: messages are consumed in
--     publishing order, so its own is gone (a dead node's unacked copy, a deferred retry never sent).
-- Otherwise its copy may still be queued (a deep queue, or no worker consuming): publishing another
-- would only pile up duplicates.
-- Returns a flat list: key, descriptor, key, descriptor ...
local now = tonumber(ARGV[1])
local grace = tonumber(ARGV[6])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
local queued = redis.call('LLEN', KEYS[2])
local mark = tonumber(redis.call('GET', KEYS[3]) or '0')
local out = {}
for _, key in ipairs(due) do
  local unit = ARGV[4] .. key
  local state, desc, published, claimed = unpack(redis.call('HMGET', unit, 'state', 'desc', 'pub_ms',
    'claimed_ms'))
  published = tonumber(published or '0')
  local lease = ARGV[5] .. key
  if state ~= 'planned' or not desc then
    redis.call('ZREM', KEYS[1], key)
  elseif redis.call('EXISTS', lease) == 1 then
    -- Its holder renews it while alive; once it lapses nobody can (renew.lua), so look right after.
    redis.call('ZADD', KEYS[1], now + redis.call('PTTL', lease) + tonumber(ARGV[7]), key)
  elseif published > tonumber(claimed or '0') and queued > 0 and published + grace > mark then
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), key)
  else
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), key)
    redis.call('HSET', unit, 'pub_ms', now)
    redis.call('HINCRBY', unit, 'republished', 1)
    redis.call('HINCRBY', KEYS[4], 'republished', 1)
    table.insert(out, key)
    table.insert(out, desc)
  end
end
return out
