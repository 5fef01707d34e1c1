-- SPEC §9: one GCRA decision, atomically, in one round trip. The same algorithm
-- as local.rs (a property test holds them equal).
-- KEYS[1]  the bucket, e.g. "authgate:login_user:alice"
-- ARGV[1]  "take": count one event unless over the limit; "refund": give one back;
--          "admit": "take" that answers how far the TAT runs ahead (route limits'
--          RateLimit header, SPEC §17)
-- ARGV[2]  interval: µs between two events at the sustained rate
-- ARGV[3]  tolerance: µs the theoretical arrival time (TAT) may run ahead of now
-- ARGV[4]  optional: now, in µs (tests drive the clock with it); the gateway
--          leaves it out, so every gateway reads one clock: the server's TIME
-- The key holds the TAT in µs and expires exactly when it falls to now: a bucket
-- that is full again is an absent key, so Redis never grows without bound.
-- Returns {1, 0} when counted (or refunded), {0, wait µs} when over the limit;
-- "admit" counted returns {1, TAT - now µs}.
-- Redis < 5 replicates scripts verbatim and refuses writes after TIME unless
-- told to replicate effects; from 5 on that is the default (7: always).
if redis.replicate_commands then
  redis.replicate_commands()
end
local now
if ARGV[4] then
  now = tonumber(ARGV[4])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local stored = tonumber(redis.call('GET', KEYS[1]))
local tat
if ARGV[1] == 'take' or ARGV[1] == 'admit' then
  tat = math.max(stored or now, now)
  local wait = tat - tolerance - now
  if wait > 0 then
    return {0, wait}
  end
  tat = tat + interval
elseif ARGV[1] == 'refund' then
  if not stored then
    return {1, 0}
  end
  tat = stored - interval
  if tat <= now then
    redis.call('DEL', KEYS[1])
    return {1, 0}
  end
else
  return redis.error_reply('gcra.lua: unknown mode')
end
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
if ARGV[1] == 'admit' then
  return {1, tat - now}
end
return {1, 0}
