"""Lua scripts of the Redis broker: each one is a single atomic step on the server.

Every key a script touches is passed in ``KEYS``. Times come from the server's ``TIME``,
so producers and workers on machines whose clocks differ still agree on due times.
Scripts read their list arguments positionally: a count, then fixed-size groups.
"""

from __future__ import annotations

__all__ = ["PROMOTE", "PUBLISH", "RECLAIM", "REDRIVE", "SETTLE", "WRITE_RECORDS"]

_PRELUDE = r"""
local TERMINAL = {completed = true, failed = true, cancelled = true}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A non-terminal state never overwrites a terminal one unless forced: a late duplicate
-- run's "running" must not hide a stored result.
local function write_record(key, state, data, ttl_ms, force)
  if not force and not TERMINAL[state] then
    local current = redis.call('HGET', key, 'state')
    if current and TERMINAL[current] then return end
  end
  redis.call('HSET', key, 'state', state, 'data', data)
  redis.call('HDEL', key, 'note')
  if ttl_ms > 0 then redis.call('PEXPIRE', key, ttl_ms) else redis.call('PERSIST', key) end
end

-- Publish one message. keys: stream, record, unique; a: ARGV offset of its 9 fields:
-- id, queue, prio, body, delay_ms, state, data, ttl_ms, unique_for_ms ('' = no key).
local function publish_one(delayed_key, stream, record, unique, a, now)
  local id, queue, prio, body = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local delay = tonumber(ARGV[a + 4])
  local state, data, ttl = ARGV[a + 5], ARGV[a + 6], tonumber(ARGV[a + 7])
  local unique_for = ARGV[a + 8]
  if unique_for ~= '' then
    if not redis.call('SET', unique, id, 'NX', 'PX', unique_for) then
      return redis.call('GET', unique)
    end
  end
  if state ~= '' then write_record(record, state, data, ttl, true) end
  if delay > 0 then
    redis.call('ZADD', delayed_key, now + delay, id .. ' ' .. queue .. ' ' .. prio .. ' ' .. body)
  else
    redis.call('XADD', stream, '*', 'id', id, 'body', body)
  end
  return id
end

local function field(fields, name)
  for i = 1, #fields, 2 do
    if fields[i] == name then return fields[i + 1] end
  end
  return ''
end
"""

PUBLISH = (
    _PRELUDE
    + r"""
-- KEYS: delayed, then per message: stream, record, unique.  ARGV: n, then 9 per message.
local now = now_ms()
local ids = {}
for i = 0, tonumber(ARGV[1]) - 1 do
  local k = 2 + i * 3
  ids[#ids + 1] = publish_one(KEYS[1], KEYS[k], KEYS[k + 1], KEYS[k + 2], 2 + i * 9, now)
end
return ids
"""
)

WRITE_RECORDS = (
    _PRELUDE
    + r"""
-- KEYS: record keys.  ARGV: per record: state, data, ttl_ms.
for i = 1, #KEYS do
  local a = (i - 1) * 3 + 1
  write_record(KEYS[i], ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), false)
end
return #KEYS
"""
)

SETTLE = (
    _PRELUDE
    + r"""
-- KEYS: stream, dead, delayed, then n_records record keys, then per outgoing: stream,
-- record, unique.
-- ARGV: group, receipt, dead_reason ('' = none), deliveries, queue, prio, dead_maxlen,
-- n_records, n_out, then per record: state, data, ttl_ms; then 9 per outgoing.
local stream, group, receipt = KEYS[1], ARGV[1], ARGV[2]
-- Only the holder of a pending message may settle it, once: a duplicate settle or a
-- stale consumer's late settle does nothing, so a chain never forks.
if #redis.call('XPENDING', stream, group, receipt, receipt, 1) == 0 then return 0 end
local now = now_ms()
local n_records, n_out = tonumber(ARGV[8]), tonumber(ARGV[9])
local a = 10
for i = 1, n_records do
  write_record(KEYS[3 + i], ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), false)
  a = a + 3
end
local k = 4 + n_records
for i = 1, n_out do
  publish_one(KEYS[3], KEYS[k], KEYS[k + 1], KEYS[k + 2], a, now)
  k = k + 3
  a = a + 9
end
if ARGV[3] ~= '' then
  local entry = redis.call('XRANGE', stream, receipt, receipt)
  local id, body = '', ''
  if entry[1] then
    id, body = field(entry[1][2], 'id'), field(entry[1][2], 'body')
  end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', 'queue', ARGV[5], 'prio', ARGV[6],
    'id', id, 'body', body, 'reason', ARGV[3], 'deliveries', ARGV[4], 'at', now)
end
redis.call('XACK', stream, group, receipt)
redis.call('XDEL', stream, receipt)
return 1
"""
)

RECLAIM = (
    _PRELUDE
    + r"""
-- KEYS: stream, dead.  ARGV: group, consumer, min_idle_ms, count, cursor, max_deliveries,
-- queue, prio, dead_maxlen, record_prefix.
-- Claims messages idle for min_idle_ms (their consumer died or lost them); one delivered
-- more than max_deliveries times goes to the dead stream with the reason instead.
local stream, dead, group = KEYS[1], KEYS[2], ARGV[1]
local res = redis.call('XAUTOCLAIM', stream, group, ARGV[2], ARGV[3], ARGV[5], 'COUNT', ARGV[4])
local max = tonumber(ARGV[6])
local out = {}
local now = nil
for _, entry in ipairs(res[2]) do
  local receipt, fields = entry[1], entry[2]
  local info = redis.call('XPENDING', stream, group, receipt, receipt, 1)
  local n = 1
  if info[1] then n = tonumber(info[1][4]) end
  if n > max then
    now = now or now_ms()
    local id = field(fields, 'id')
    local reason = 'delivered ' .. n .. ' times (max_deliveries=' .. max ..
      '); its workers kept dying or losing it'
    redis.call('XADD', dead, 'MAXLEN', '~', ARGV[9], '*', 'queue', ARGV[7], 'prio', ARGV[8],
      'id', id, 'body', field(fields, 'body'), 'reason', reason, 'deliveries', n, 'at', now)
    redis.call('XACK', stream, group, receipt)
    redis.call('XDEL', stream, receipt)
    if id ~= '' then
      local key = ARGV[10] .. id
      if redis.call('EXISTS', key) == 1 then
        redis.call('HSET', key, 'state', 'failed', 'note', reason)
      end
    end
  else
    out[#out + 1] = {receipt, field(fields, 'id'), field(fields, 'body'), n}
  end
end
return {res[1], out}
"""
)

PROMOTE = (
    _PRELUDE
    + r"""
-- KEYS: delayed.  ARGV: stream_prefix, record_prefix, limit.
-- Moves every due message (up to limit per call) to its stream; returns the number moved
-- and the next due time in ms (or false).
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do
  local s1 = string.find(member, ' ', 1, true)
  local s2 = string.find(member, ' ', s1 + 1, true)
  local s3 = string.find(member, ' ', s2 + 1, true)
  local id = string.sub(member, 1, s1 - 1)
  local queue = string.sub(member, s1 + 1, s2 - 1)
  local prio = string.sub(member, s2 + 1, s3 - 1)
  local stream = ARGV[1] .. queue
  if prio == '1' then stream = stream .. ':prio' end
  redis.call('XADD', stream, '*', 'id', id, 'body', string.sub(member, s3 + 1))
  redis.call('ZREM', KEYS[1], member)
  local key = ARGV[2] .. id
  local state = redis.call('HGET', key, 'state')
  if state == 'scheduled' or state == 'retrying' then redis.call('HSET', key, 'state', 'queued') end
end
local upcoming = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, upcoming[2] or false, now}
"""
)

REDRIVE = (
    _PRELUDE
    + r"""
-- KEYS: dead, then n record keys.  ARGV: stream_prefix, n_ids, ids..., then per record:
-- state, data, ttl_ms.
local n_ids = tonumber(ARGV[2])
local moved = 0
for i = 1, n_ids do
  local dead_id = ARGV[2 + i]
  local entry = redis.call('XRANGE', KEYS[1], dead_id, dead_id)
  if entry[1] then
    local fields = entry[1][2]
    local stream = ARGV[1] .. field(fields, 'queue')
    if field(fields, 'prio') == '1' then stream = stream .. ':prio' end
    redis.call('XADD', stream, '*', 'id', field(fields, 'id'), 'body', field(fields, 'body'))
    redis.call('XDEL', KEYS[1], dead_id)
    moved = moved + 1
  end
end
local a = 3 + n_ids
for i = 2, #KEYS do
  write_record(KEYS[i], ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2]), true)
  a = a + 3
end
return moved
"""
)
