"""The Lua scripts of the Redis adapter: each change of the shared state is one atomic step in Redis.

Keys of one app, under the prefix ``P`` = ``<namespace>:<app_id>:``:

- ``P bus``: the pub/sub channel; every message is ``"<seq> <json>"``, ``seq`` from ``P seq`` (INCR), so
  receivers see gaps (lost messages) and resets (a restarted Redis).
- ``P nodes``: sorted set, process id -> heartbeat deadline (ms, Redis clock). A process past its
  deadline is dead: any process reaps it (``REAP``), once, since reaping deletes what it reads.
- ``P n:<node>``: hash, one process's share: ``s|<channel>`` -> its subscribers, ``p|<channel>|<user>``
  -> 1 (a presence member there), ``u|<user>`` -> 1 (a signed-in user there); ``!`` marks it registered.
- ``P subs`` (channel -> subscribers), ``P p:<channel>`` (user -> processes), ``P pi:<channel>``
  (user -> user_info JSON), ``P pch`` (presence channels with members), ``P users`` (user -> processes):
  the sums over all processes, which REST reads and whose transitions (0 -> 1, 1 -> 0) are announced.
- ``P dl`` / ``P dlz``: delayed webhooks (channel_vacated, member_removed) by key, and their due times;
  a re-occupation or re-join before it is due cancels both (reference §2.3).
- ``P cache:<channel>`` (``[event, data]``, expiring with the cache TTL), ``P cmiss:<channel>``.
- Channel history (``PUBLISH_HISTORY``): ``P hn:<channel>`` the last serial, ``P hs:<channel>`` its
  stream id, ``P h:<channel>`` a stream of the events (entry id ``0-<serial>``, fields ``t`` ms, ``e``,
  ``d``, ``u``), capped at the channel's ``max_events``; all three expire ``max_age`` after the last
  event (an idle channel's stream is forgotten; the next event starts a new one).
"""

from __future__ import annotations

__all__ = ["HEARTBEAT", "PUBLISH", "PUBLISH_HISTORY", "REAP", "RESYNC", "SNAPSHOT", "SYNC"]

# ARGV: 1 prefix, 2 node, 3 webhooks '1'/'0', 4 webhook delay (ms), 5 subscription counts '1'/'0',
# 6 node TTL (ms); script-specific arguments follow. Returns webhook events (JSON) to send now.
_PRELUDE = r"""
local P, NODE = ARGV[1], ARGV[2]
local HOOKS, DELAY, COUNTS, TTL = ARGV[3] == '1', tonumber(ARGV[4]), ARGV[5] == '1', tonumber(ARGV[6])
local NK = P .. 'n:' .. NODE
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}

local function publish(msg)
  local seq = redis.call('INCR', P .. 'seq')
  redis.call('PUBLISH', P .. 'bus', seq .. ' ' .. msg)
end
local function hook(ev)
  if HOOKS then out[#out + 1] = cjson.encode(ev) end
end
local function delay(key, ev)
  if HOOKS then
    redis.call('HSET', P .. 'dl', key, cjson.encode(ev))
    redis.call('ZADD', P .. 'dlz', NOW + DELAY, key)
  end
end
local function cancel(key)
  if redis.call('HDEL', P .. 'dl', key) == 1 then
    redis.call('ZREM', P .. 'dlz', key)
    return true
  end
  return false
end

local function channel(ch, delta)
  local total = redis.call('HINCRBY', P .. 'subs', ch, delta)
  local before = total - delta
  if total <= 0 then redis.call('HDEL', P .. 'subs', ch) end
  if before <= 0 and total > 0 then
    if not cancel('v|' .. ch) then hook({name = 'channel_occupied', channel = ch}) end
  elseif before > 0 and total <= 0 then
    delay('v|' .. ch, {name = 'channel_vacated', channel = ch})
  end
  if COUNTS and total > 0 and string.sub(ch, 1, 9) ~= 'presence-' then
    publish(cjson.encode({'n', ch, total}))
    hook({name = 'subscription_count', channel = ch, subscription_count = total})
  end
end

local function member(ch, uid, delta, info, exclude)
  local total = redis.call('HINCRBY', P .. 'p:' .. ch, uid, delta)
  local before = total - delta
  if total <= 0 then
    redis.call('HDEL', P .. 'p:' .. ch, uid)
    redis.call('HDEL', P .. 'pi:' .. ch, uid)
    if redis.call('HLEN', P .. 'p:' .. ch) == 0 then redis.call('SREM', P .. 'pch', ch) end
  end
  if before <= 0 and total > 0 then
    redis.call('HSET', P .. 'pi:' .. ch, uid, info)
    redis.call('SADD', P .. 'pch', ch)
    publish(cjson.encode({'ma', ch, uid, info, exclude}))
    if not cancel('r|' .. ch .. '|' .. uid) then
      hook({name = 'member_added', channel = ch, user_id = uid})
    end
  elseif before > 0 and total <= 0 then
    publish(cjson.encode({'mr', ch, uid}))
    delay('r|' .. ch .. '|' .. uid, {name = 'member_removed', channel = ch, user_id = uid})
  end
end

local function user(uid, delta)
  local total = redis.call('HINCRBY', P .. 'users', uid, delta)
  local before = total - delta
  if total <= 0 then redis.call('HDEL', P .. 'users', uid) end
  if before <= 0 and total > 0 then
    publish(cjson.encode({'on', uid}))
  elseif before > 0 and total <= 0 then
    publish(cjson.encode({'off', uid}))
  end
end

-- Set this node's share of one field; fold the difference into the cluster-wide sums.
local function apply(field, value, info, exclude)
  local old = tonumber(redis.call('HGET', NK, field) or '0')
  if value == old then return end
  if value > 0 then redis.call('HSET', NK, field, value) else redis.call('HDEL', NK, field) end
  local kind, rest = string.sub(field, 1, 1), string.sub(field, 3)
  if kind == 's' then
    channel(rest, value - old)
  elseif kind == 'p' then
    local bar = string.find(rest, '|', 1, true)
    member(string.sub(rest, 1, bar - 1), string.sub(rest, bar + 1), value - old, info, exclude)
  elseif kind == 'u' then
    user(rest, value - old)
  end
end
"""

# ARGV[7]: JSON [[field, value, user_info JSON, socket_id], ...]. Returns {-1} when this node is not
# registered (Redis lost its state, or it was reaped as dead): the caller resynchronises instead.
SYNC = (
    _PRELUDE
    + r"""
if redis.call('HEXISTS', NK, '!') == 0 then return {-1} end
redis.call('ZADD', P .. 'nodes', NOW + TTL, NODE)
for _, f in ipairs(cjson.decode(ARGV[7])) do apply(f[1], f[2], f[3], f[4]) end
return out
"""
)

# ARGV[7]: JSON [[field, value, user_info JSON], ...]: this node's whole share, replacing what Redis has.
RESYNC = (
    _PRELUDE
    + r"""
local want = {}
for _, f in ipairs(cjson.decode(ARGV[7])) do want[f[1]] = f end
local have = redis.call('HGETALL', NK)
for i = 1, #have, 2 do
  if have[i] ~= '!' and want[have[i]] == nil then apply(have[i], 0, '', '') end
end
for field, f in pairs(want) do apply(field, f[2], f[3], '') end
redis.call('HSET', NK, '!', NOW)
redis.call('ZADD', P .. 'nodes', NOW + TTL, NODE)
return out
"""
)

# ARGV[7]: the node to reap; ARGV[8]: '1' to reap it even if alive (a process leaving cleanly).
REAP = (
    _PRELUDE
    + r"""
local target = ARGV[7]
local deadline = redis.call('ZSCORE', P .. 'nodes', target)
if ARGV[8] ~= '1' and deadline and tonumber(deadline) > NOW then return out end
NK = P .. 'n:' .. target
local have = redis.call('HGETALL', NK)
for i = 1, #have, 2 do
  if have[i] ~= '!' then apply(have[i], 0, '', '') end
end
redis.call('DEL', NK)
redis.call('ZREM', P .. 'nodes', target)
return out
"""
)

# Returns {registered 0/1, dead nodes, due delayed webhooks (JSON)}.
HEARTBEAT = (
    _PRELUDE
    + r"""
redis.call('ZADD', P .. 'nodes', NOW + TTL, NODE)
local dead = redis.call('ZRANGEBYSCORE', P .. 'nodes', '-inf', NOW, 'LIMIT', 0, 20)
local keys = redis.call('ZRANGEBYSCORE', P .. 'dlz', '-inf', NOW, 'LIMIT', 0, 200)
local due = {}
for _, k in ipairs(keys) do
  local ev = redis.call('HGET', P .. 'dl', k)
  redis.call('HDEL', P .. 'dl', k)
  redis.call('ZREM', P .. 'dlz', k)
  if ev then due[#due + 1] = ev end
end
return {redis.call('HEXISTS', NK, '!'), dead, due}
"""
)

# ARGV: 1 prefix, 2 message JSON, then (cache channel, [event, data] JSON, TTL ms) triples.
PUBLISH = r"""
local P = ARGV[1]
local seq = redis.call('INCR', P .. 'seq')
redis.call('PUBLISH', P .. 'bus', seq .. ' ' .. ARGV[2])
for i = 3, #ARGV, 3 do
  redis.call('SET', P .. 'cache:' .. ARGV[i], ARGV[i + 1], 'PX', ARGV[i + 2])
  redis.call('DEL', P .. 'cmiss:' .. ARGV[i])
end
return seq
"""

# ARGV: 1 prefix. Returns {seq, {channel, {user, info, ...}, ...}, online users}, all in one instant.
SNAPSHOT = r"""
local P = ARGV[1]
local members = {}
for _, ch in ipairs(redis.call('SMEMBERS', P .. 'pch')) do
  members[#members + 1] = ch
  members[#members + 1] = redis.call('HGETALL', P .. 'pi:' .. ch)
end
return {tonumber(redis.call('GET', P .. 'seq') or '0'), members, redis.call('HKEYS', P .. 'users')}
"""

# ARGV: 1 prefix, 2 message JSON whose events carry, as a fifth item, one [max_events, max_age ms] per
# channel (null: not recorded), or for a client event ["c", channel, frame, exclude, [max_events,
# max_age ms]]; then cache triples as in PUBLISH. Each recorded channel gets its next position, the
# event is appended to the channel's stream, and the message is published with the positions in place
# of the limits ([serial, stream_id, time ms]): every process records the same positions.
PUBLISH_HISTORY = r"""
local P = ARGV[1]
local msg = cjson.decode(ARGV[2])
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function record(ch, limits, event, data, user)
  if type(limits) ~= 'table' then return cjson.null end
  local maxlen, age = limits[1], limits[2]
  local n = redis.call('INCR', P .. 'hn:' .. ch)
  local sid = redis.call('GET', P .. 'hs:' .. ch)
  if n == 1 or not sid then
    -- a new stream (the channel's keys expired, or were evicted): nothing of the old one may remain
    sid = string.format('%x.%x', NOW, redis.call('INCR', P .. 'hgen'))
    redis.call('DEL', P .. 'h:' .. ch)
  end
  redis.call('SET', P .. 'hs:' .. ch, sid, 'PX', age)
  redis.call('PEXPIRE', P .. 'hn:' .. ch, age)
  if maxlen > 0 then
    local key = P .. 'h:' .. ch
    redis.call('XADD', key, 'MAXLEN', maxlen, '0-' .. n, 't', NOW, 'e', event, 'd', data, 'u', user or '')
    redis.call('PEXPIRE', key, age)
  end
  return {n, sid, NOW}
end
if msg[1] == 'e' then
  for _, ev in ipairs(msg[2]) do
    local limits = ev[5]
    if type(limits) == 'table' then
      local positions = {}
      for i, ch in ipairs(ev[3]) do
        positions[i] = record(ch, limits[i], ev[1], ev[2], nil)
      end
      ev[5] = positions
    end
  end
elseif msg[1] == 'c' and type(msg[5]) == 'table' then
  local frame = cjson.decode(msg[3])
  local user = frame['user_id']
  if type(user) ~= 'string' then user = nil end
  msg[5] = record(msg[2], msg[5], frame['event'], frame['data'], user)
end
local seq = redis.call('INCR', P .. 'seq')
redis.call('PUBLISH', P .. 'bus', seq .. ' ' .. cjson.encode(msg))
for i = 3, #ARGV, 3 do
  redis.call('SET', P .. 'cache:' .. ARGV[i], ARGV[i + 1], 'PX', ARGV[i + 2])
  redis.call('DEL', P .. 'cmiss:' .. ARGV[i])
end
return seq
"""
