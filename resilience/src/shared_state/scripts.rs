//! The Lua scripts run on the Redis server: each is one atomic step over one breaker's or
//! one limit's keys, timed by the server's clock (`TIME`), so instances need no common
//! clock.

/// One instance's report on one shared breaker, and the fleet's verdict.
///
/// KEYS: the breaker's hash, its window (a list of `time instance calls failures slow`
/// entries, one per report), the failures per instance in the window (a hash), the
/// instances' heartbeats (a sorted set).
/// ARGV: instance, calls, failures, slow, trial successes, trial failures, trials
/// wanted, the fleet generation the trials were granted in, window kind (0 count,
/// 1 time), window size (calls or ms), failure threshold (0: none), failure rate (-1:
/// none), minimum calls, slow-call rate (-1: none), recovery (ms), half-open calls,
/// success threshold, distinct failing instances needed, heartbeat lifetime (ms).
/// Returns: state (0 closed, 1 open, 2 half-open), generation, ms left open, trials
/// granted, calls, failures and failing instances in the window, live instances.
pub(super) const BREAKER: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local inst = ARGV[1]
local calls, fails, slow = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local tok, tbad, want, seen = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local kind, size = tonumber(ARGV[9]), tonumber(ARGV[10])
local fthr, frate, mincalls, srate = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local recovery, hmax, sthr, mininst = tonumber(ARGV[15]), tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18])
local ttl = tonumber(ARGV[19])
local h = redis.call('HMGET', KEYS[1], 'state', 'gen', 'until', 'issued', 'ok', 'since', 'calls', 'failures', 'slow')
local state, gen, untl = tonumber(h[1]) or 0, tonumber(h[2]) or 0, tonumber(h[3]) or 0
local issued, ok, since = tonumber(h[4]) or 0, tonumber(h[5]) or 0, tonumber(h[6]) or 0
local tc, tf, ts = tonumber(h[7]) or 0, tonumber(h[8]) or 0, tonumber(h[9]) or 0
local function clear()
  redis.call('DEL', KEYS[2], KEYS[3])
  tc, tf, ts = 0, 0, 0
end
local function open()
  state, gen, untl = 1, gen + 1, now + recovery
  clear()
end
if state == 1 and now >= untl then
  state, gen, issued, ok, since = 2, gen + 1, 0, 0, now
end
if state == 2 and seen == gen then
  if tbad > 0 then
    open()
  elseif tok > 0 then
    ok = ok + tok
    if ok >= sthr then
      state, gen = 0, gen + 1
      clear()
    end
  end
end
-- Trials granted to instances that never reported on them are handed out again.
if state == 2 and now - since > math.max(recovery, ttl) then
  issued, since = 0, now
end
if state == 0 then
  if calls > 0 then
    redis.call('RPUSH', KEYS[2], now .. ' ' .. inst .. ' ' .. calls .. ' ' .. fails .. ' ' .. slow)
    tc, tf, ts = tc + calls, tf + fails, ts + slow
    if fails > 0 then
      redis.call('HINCRBY', KEYS[3], inst, fails)
    end
  end
  while true do
    local first = redis.call('LINDEX', KEYS[2], 0)
    if not first then break end
    local a, i, c, f, s = string.match(first, '^(%d+) (%S+) (%d+) (%d+) (%d+)$')
    a, c, f, s = tonumber(a), tonumber(c), tonumber(f), tonumber(s)
    local drop
    if kind == 1 then drop = a <= now - size else drop = tc - c >= size end
    if not drop then break end
    redis.call('LPOP', KEYS[2])
    tc, tf, ts = tc - c, tf - f, ts - s
    if f > 0 and redis.call('HINCRBY', KEYS[3], i, -f) <= 0 then
      redis.call('HDEL', KEYS[3], i)
    end
  end
  if calls > 0 and redis.call('HLEN', KEYS[3]) >= mininst then
    local trip = fthr > 0 and tf >= fthr
    if not trip and tc > 0 and tc >= mincalls then
      trip = (frate >= 0 and tf * 100 >= frate * tc) or (srate >= 0 and ts * 100 >= srate * tc)
    end
    if trip then open() end
  end
end
local granted = 0
if state == 2 and want > 0 then
  granted = math.max(0, math.min(want, hmax - issued))
  issued = issued + granted
end
redis.call('HSET', KEYS[1], 'state', state, 'gen', gen, 'until', untl, 'issued', issued, 'ok', ok,
  'since', since, 'calls', tc, 'failures', tf, 'slow', ts)
local keep = 86400000
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('PEXPIRE', KEYS[2], keep)
redis.call('PEXPIRE', KEYS[3], keep)
redis.call('ZADD', KEYS[4], now, inst)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - ttl)
local remaining = 0
if state == 1 then remaining = math.max(0, untl - now) end
return {state, gen, remaining, granted, tc, tf, redis.call('HLEN', KEYS[3]), redis.call('ZCARD', KEYS[4])}
"#;

/// An instance's heartbeat. KEYS: the heartbeats (a sorted set); ARGV: instance,
/// heartbeat lifetime (ms). Returns the live instances.
pub(super) const HEARTBEAT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
return redis.call('ZCARD', KEYS[1])
"#;

/// A lease of tokens from a shared limit: GCRA over the limit's theoretical arrival
/// time, in microseconds. KEYS: the arrival time; ARGV: emission interval (µs),
/// tolerance (burst × interval, µs), tokens wanted. Returns the tokens granted and, when
/// fewer than wanted, the µs until the next one.
pub(super) const LEASE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local grant = math.max(0, math.min(want, math.floor((now + tolerance - tat) / interval)))
if grant > 0 then
  tat = tat + grant * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 60000)
end
local wait = 0
if grant < want then wait = math.max(0, tat + interval - now - tolerance) end
return {grant, math.ceil(wait)}
"#;
