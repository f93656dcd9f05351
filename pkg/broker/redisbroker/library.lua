#!lua name=herald
--[[ herald's Redis Function library (pkg/broker/redisbroker/library.lua).

This file is the library exactly as herald loads it with its defaults on a
standalone Redis or Sentinel — key prefix "herald", HistorySize 1000, no
HistoryTTL, an IdempotencyWindow of 5 minutes — except for this comment,
which herald leaves out. It loads as it is:

  redis-cli -x FUNCTION LOAD REPLACE < library.lua

For another configuration herald rewrites (func library in library.go),
and nothing else:

  - the name on the first line: herald, herald_<prefix> for another prefix;
  - the prefix in the comment line after this comment;
  - the value of each line "local NAME = value" of the settings block
    (PREFIX, MAXLEN, TTL_MS, READ_BYTES, TOUCH_TTL_MS, KEY_MS, PUBLISH,
    CLUSTER), from the broker's Config; in Redis Cluster PUBLISH is
    "SPUBLISH" and CLUSTER true;
  - the function names herald_publish, herald_read and herald_touch,
    wherever they appear: <prefix>_publish, <prefix>_read, <prefix>_touch.

TestLibraryFile checks that; TestLibraryLoaded that what Redis holds is
that text. The version in the comment line after this one ("herald 5")
changes whenever the code changes meaning: it is part of the library's
source, so FUNCTION LIST shows which herald loaded it.

The library is generated per key prefix with the prefix and the history
settings baked in: a service in another language publishes with the same
retention as herald itself, knowing only the topic.

Functions (<fn> is the prefix, "herald" by default):

  FCALL <fn>_publish 1 <topic> <event-type> <data> [<key>]  -> event ID
  FCALL <fn>_read 1 <topic> <after> <count>         -> state + entries
  FCALL <fn>_touch 1 <topic>                         -> epoch

or, in the declared-keys form, with the topic's own keys instead of its
name (the topic is read from the first one):

  FCALL <fn>_publish 2 <p>:{<topic>}:s <p>:{<topic>}:e <event-type> <data>
  FCALL <fn>_publish 3 <p>:{<topic>}:s <p>:{<topic>}:e <p>:{<topic>}:k:<key> <event-type> <data> <key>
  FCALL <fn>_read 2 <p>:{<topic>}:s <p>:{<topic>}:e <after> <count>
  FCALL <fn>_touch 2 <p>:{<topic>}:s <p>:{<topic>}:e

The function derives the keys from the topic: <prefix>:{<topic>}:s
(stream), <prefix>:{<topic>}:e (epoch), <prefix>:{<topic>}:k:<key>
(idempotency record), and publishes on channel <prefix>:{<topic>}. The
broker always uses the declared-keys form. In Redis Cluster it is the
only one the library accepts: while a slot migrates, Redis sends a
command to the node that holds its declared keys, and a topic NAME is
never a key — the short form would be redirected to the importing node
and start a second stream there. In Cluster the library publishes with
SPUBLISH (sharded pub/sub: the message stays on the shard that owns the
slot) and the broker subscribes with SSUBSCRIBE; elsewhere with PUBLISH
and SUBSCRIBE.

Epoch: a per-topic token created by the first publish to a topic whose
epoch key or stream is missing: the server time in microseconds, base 36,
always above the previous epoch if there was one, then "_" and the topic's
tag (8 hex digits of the SHA-1 of its name; see topicTag in cursor.go), so
that no two topics share an epoch even when created in the same
microsecond. A Redis that restarts without persistence loses the key with
the stream, so the next publish creates a new, later epoch and old cursors
are recognised as belonging to another epoch. So does a stream deleted or
evicted on its own: its successor restarts the entry IDs (within the same
millisecond even at or below the old ones), which must not pass for the
old epoch's. A topic whose stream is missing reads as having no epoch
("0").

With a history TTL, every publish also sets the stream and epoch keys to
expire after the TTL: the keys of a topic nobody publishes to any more
vanish once its last event is older than the TTL (the events would be
trimmed by then anyway), so topic churn does not fill a noeviction Redis.
A cursor of such a topic then gets a broker.ReasonEpoch reset.

<fn>_read returns, atomically: epoch ("0" if the topic has none),
last-generated-id, first entry ID ("" if empty), length, entries-added,
then up to <count> entries after <after> (exclusive; "0-0" = from the
start) as flat id, type, data triples — fewer once their types and data
reach READ_BYTES (at least one entry), so a short page is not the end of
the stream: the end is an empty page or the last-generated-id.
]]
-- herald 5: generated for key prefix "herald"; loaded by herald at start.
local PREFIX = "herald"
local MAXLEN = 1000
local TTL_MS = 0
local READ_BYTES = 2097152
local TOUCH_TTL_MS = 86400000
local KEY_MS = 300000
local PUBLISH = "PUBLISH"
local CLUSTER = false

local function check_topic(topic)
  if type(topic) ~= 'string' or #topic < 1 or #topic > 256 or string.find(topic, '[^!-~]') then
    return 'invalid topic: 1-256 printable ASCII characters without spaces'
  end
end

-- topic_of returns the topic of a call and its keys' common part
-- ("<prefix>:{<topic>}"), from the short form (KEYS = {topic}) or the
-- declared-keys form (KEYS = {base:s, base:e [, base:k:<key>]}; nkeys is
-- the number of keys the function takes there).
local function topic_of(keys, nkeys, fn)
  if #keys == 1 then
    if CLUSTER then
      return nil, nil, 'in Redis Cluster declare the topic keys: FCALL ' .. fn .. ' 2 ' ..
        PREFIX .. ':{<topic>}:s ' .. PREFIX .. ':{<topic>}:e ... (see the herald README)'
    end
    local err = check_topic(keys[1])
    if err then return nil, nil, err end
    return keys[1], PREFIX .. ':{' .. keys[1] .. '}'
  end
  local s, head = keys[1], PREFIX .. ':{'
  if #keys < 2 or #keys > nkeys or type(s) ~= 'string' or string.sub(s, 1, #head) ~= head or
      string.sub(s, -3) ~= '}:s' or #s < #head + 4 then
    return nil, nil, 'bad keys: FCALL ' .. fn .. ' 1 <topic> ..., or 2 ' .. PREFIX .. ':{<topic>}:s ' ..
      PREFIX .. ':{<topic>}:e ...'
  end
  local topic = string.sub(s, #head + 1, -4)
  local err = check_topic(topic)
  if err then return nil, nil, err end
  local base = head .. topic .. '}'
  if keys[2] ~= base .. ':e' then
    return nil, nil, 'bad keys: the second key of topic ' .. topic .. ' is ' .. base .. ':e'
  end
  return topic, base
end

local function check_type(t)
  if #t > 256 then return 'event type is longer than 256 bytes' end
  if string.find(t, '[\r\n%z]') then return 'event type must not contain CR, LF or NUL' end
  if string.sub(t, 1, 7) == 'herald.' then return 'event types starting with "herald." are reserved' end
end

local function base36(n)
  local digits = '0123456789abcdefghijklmnopqrstuvwxyz'
  local s = ''
  repeat
    local d = n % 36
    s = string.sub(digits, d + 1, d + 1) .. s
    n = math.floor(n / 36)
  until n == 0
  return s
end

-- ensure_epoch returns the topic's epoch, creating one for a new topic,
-- or one whose stream or epoch was lost (DEL, eviction, expiry): a new
-- stream restarts its IDs, possibly at or below old ones, so it must not
-- continue the old epoch. Epochs only grow, and carry the topic's tag.
local function ensure_epoch(topic, ekey, skey)
  local epoch = redis.call('GET', ekey)
  if epoch and redis.call('EXISTS', skey) == 1 then return epoch end
  local t = redis.call('TIME')
  local n = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local old = epoch and tonumber(string.match(epoch, '^[0-9a-z]+'), 36)
  if old and n <= old then n = old + 1 end
  epoch = base36(n) .. '_' .. string.sub(redis.sha1hex(topic), 1, 8)
  redis.call('SET', ekey, epoch)
  if redis.call('EXISTS', skey) == 0 then
    -- An empty stream (no entry, none ever added) to hold the epoch.
    redis.call('XGROUP', 'CREATE', skey, 'herald-touch', '$', 'MKSTREAM')
    redis.call('XGROUP', 'DESTROY', skey, 'herald-touch')
  end
  return epoch
end

-- touch gives a topic without events an epoch (and an empty stream), so
-- that the position a subscriber takes before the first event belongs to
-- one incarnation of the topic: if Redis loses the topic later, a resume
-- from it gets an epoch reset instead of silently skipping the lost
-- events. The keys expire (after the history TTL, else TOUCH_TTL_MS)
-- unless a publish comes.
local function touch(keys, args)
  local topic, base, err = topic_of(keys, 2, 'herald_touch')
  if err then return redis.error_reply('ERR herald: ' .. err) end
  local ekey, skey = base .. ':e', base .. ':s'
  if redis.call('EXISTS', ekey) == 1 and redis.call('EXISTS', skey) == 1 then
    return redis.call('GET', ekey)
  end
  local epoch = ensure_epoch(topic, ekey, skey)
  local ttl = TTL_MS
  if ttl <= 0 then ttl = TOUCH_TTL_MS end
  redis.call('PEXPIRE', skey, ttl)
  redis.call('PEXPIRE', ekey, ttl)
  return epoch
end

local function check_key(k)
  if #k > 128 or string.find(k, '[^!-~]') then
    return 'invalid idempotency key: 1-128 printable ASCII characters without spaces'
  end
end

local function publish(keys, args)
  local topic, base, err = topic_of(keys, 3, 'herald_publish')
  if err then return redis.error_reply('ERR herald: ' .. err) end
  if #args ~= 2 and #args ~= 3 then
    return redis.error_reply('ERR herald: usage: FCALL herald_publish 1 <topic> <event-type> <data> [<idempotency-key>]')
  end
  local etype, data, key = args[1], args[2], args[3]
  err = check_type(etype)
  if err then return redis.error_reply('ERR herald: ' .. err) end

  local ekey, skey = base .. ':e', base .. ':s'
  local kkey, sum
  if key and key ~= '' then
    err = check_key(key)
    if err then return redis.error_reply('ERR herald: ' .. err) end
    if #keys > 1 and keys[3] ~= base .. ':k:' .. key then
      return redis.error_reply('ERR herald: bad keys: with an idempotency key, the third key is ' .. base .. ':k:' .. key)
    end
    if KEY_MS > 0 then
      -- The record of a key: "<event id> <sha1 of type LF data>", for
      -- the window. A retry gets the first publish's ID back.
      kkey = base .. ':k:' .. key
      sum = redis.sha1hex(etype .. '\n' .. data)
      local rec = redis.call('GET', kkey)
      if rec then
        local sp = string.find(rec, ' ', 1, true)
        if sp and string.sub(rec, sp + 1) == sum then return string.sub(rec, 1, sp - 1) end
        return redis.error_reply('ERR herald: idempotency key conflict: key ' .. key ..
          ' was used within the window for another event of the topic (' .. string.sub(rec, 1, (sp or 0) - 1) .. ')')
      end
    end
  end
  local epoch = ensure_epoch(topic, ekey, skey)
  local id
  if MAXLEN > 0 then
    id = redis.call('XADD', skey, 'MAXLEN', '~', MAXLEN, '*', 't', etype, 'd', data)
  else
    -- No history: the entry only keeps the stream's last-generated-id.
    id = redis.call('XADD', skey, 'MAXLEN', '0', '*', 't', etype, 'd', data)
  end
  if TTL_MS > 0 then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('XTRIM', skey, 'MINID', '~', string.format('%d-0', now - TTL_MS))
    redis.call('PEXPIRE', skey, TTL_MS)
    redis.call('PEXPIRE', ekey, TTL_MS)
  else
    -- Keys a subscription created (touch) expire; published ones do not.
    redis.call('PERSIST', skey)
    redis.call('PERSIST', ekey)
  end
  local full = epoch .. '-' .. id
  if kkey then redis.call('SET', kkey, full .. ' ' .. sum, 'PX', KEY_MS) end
  redis.call(PUBLISH, base, full .. '\n' .. etype .. '\n' .. data)
  return full
end

local function read(keys, args)
  local topic, base, err = topic_of(keys, 2, 'herald_read')
  if err then return redis.error_reply('ERR herald: ' .. err) end
  local skey = base .. ':s'
  -- Without its stream an epoch means nothing (the next publish starts a
  -- new one): report none.
  if redis.call('EXISTS', skey) == 0 then return {'0', '0-0', '', 0, 0} end
  local epoch = redis.call('GET', base .. ':e')
  if not epoch then epoch = '0' end
  local res = {epoch, '0-0', '', 0, 0}
  local info = redis.call('XINFO', 'STREAM', skey)
  for i = 1, #info, 2 do
    local k, v = info[i], info[i + 1]
    if k == 'last-generated-id' then res[2] = v
    elseif k == 'first-entry' and type(v) == 'table' then res[3] = v[1]
    elseif k == 'length' then res[4] = v
    elseif k == 'entries-added' then res[5] = v
    end
  end
  local count = tonumber(args[2])
  if count and count > 0 then
    -- Small XRANGE chunks up to a byte budget: a page of large events
    -- must not become a reply (and a Lua table) of hundreds of MB.
    local from, n, budget = '(' .. args[1], 0, READ_BYTES
    while n < count and budget > 0 do
      local entries = redis.call('XRANGE', skey, from, '+', 'COUNT', math.min(count - n, 8))
      if #entries == 0 then break end
      for _, e in ipairs(entries) do
        local f = e[2]
        local etype, data = '', ''
        for i = 1, #f, 2 do
          if f[i] == 't' then etype = f[i + 1] elseif f[i] == 'd' then data = f[i + 1] end
        end
        res[#res + 1] = e[1]
        res[#res + 1] = etype
        res[#res + 1] = data
        n = n + 1
        budget = budget - #etype - #data - 32
        from = '(' .. e[1]
        if budget <= 0 then break end
      end
    end
  end
  return res
end

redis.register_function('herald_publish', publish)
redis.register_function('herald_touch', touch)
redis.register_function{function_name = 'herald_read', callback = read, flags = {'no-writes'}}
