//! The Lua scripts the cluster runs in Redis. Each runs atomically there, so the steps that must
//! not interleave with another node's (assign a seq, record, publish; read the seq with the
//! history; take or renew the ingest lease) are one script each.
//!
//! Owns: `PUBLISH`, `READ`, `LEASE`. Invariants: a channel's seq and epoch live in one hash and
//! its history in one list, both expiring `ttl` after the last publish, so when the history is
//! gone the epoch goes with it and the next one is new: a resume across it is never taken for a
//! recovery. The stored text is `wire`'s format, built here because only the script knows the
//! seq and the epoch.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: meta, history. ARGV: Pub/Sub channel, body, history size, ttl ms, epoch if new.
/// Returns `{seq, epoch}`.
pub static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local t = redis.call('TIME')
local ms = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
local msg = string.format('%d', seq) .. ' ' .. epoch .. ' ' .. ms .. ' ' .. ARGV[2]
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('RPUSH', KEYS[2], msg)
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[1], msg)
return {seq, epoch}
",
    )
});

/// KEYS: meta, history. ARGV: epoch if new, ttl ms. Returns `{seq, epoch, {stored...}}`,
/// creating the epoch of a channel that has none, so a subscriber is told the epoch its seq
/// belongs to.
pub static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'seq', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
local seq = redis.call('HGET', KEYS[1], 'seq') or '0'
return {tonumber(seq), epoch, redis.call('LRANGE', KEYS[2], 0, -1)}
",
    )
});

/// KEYS: lease. ARGV: node, lease ms. Takes the lease when free, renews it when held by this
/// node; returns 1 when this node holds it afterwards.
pub static LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
",
    )
});

/// A Pusher subscription, counted over the cluster. KEYS: subscriptions, held (this node's),
/// members, member infos. ARGV: node, key, user id ('' off presence), user_info, member limit
/// (0: none). Returns `{occupied, added, info...}`: occupied 1 when it is the channel's first
/// subscription in the cluster; added 1 when the user was no member yet, -1 when the channel is
/// full (then nothing was counted); then the members as user id, user_info pairs.
pub static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local added = 0
if ARGV[3] ~= '' then
  local n = redis.call('HGET', KEYS[3], ARGV[3])
  if not n then
    local max = tonumber(ARGV[5])
    if max > 0 and redis.call('HLEN', KEYS[3]) >= max then
      return {0, -1}
    end
    redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
    added = 1
  end
  redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
  redis.call('HINCRBY', KEYS[2], 'm|' .. ARGV[2] .. '|' .. ARGV[3], 1)
end
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[2], 's|' .. ARGV[2], 1)
local result = {total == 0 and 1 or 0, added}
if ARGV[3] ~= '' then
  for _, v in ipairs(redis.call('HGETALL', KEYS[4])) do table.insert(result, v) end
end
return result
",
    )
});

/// Undoes a `JOIN` (only what this node still holds: after a `REAP` of this node, nothing).
/// KEYS and ARGV as `JOIN` (without info and limit). Returns `{vacated, removed}`: vacated 1
/// when it was the channel's last subscription in the cluster, removed 1 when it was the user's
/// last connection on the channel.
pub static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local function down(key, field, by)
  local n = redis.call('HINCRBY', key, field, -by)
  if n <= 0 then redis.call('HDEL', key, field) end
  return n
end
local field = 's|' .. ARGV[2]
if not redis.call('HGET', KEYS[2], field) then return {0, 0} end
down(KEYS[2], field, 1)
down(KEYS[1], ARGV[1], 1)
local removed = 0
if ARGV[3] ~= '' then
  local member = 'm|' .. ARGV[2] .. '|' .. ARGV[3]
  if redis.call('HGET', KEYS[2], member) then
    down(KEYS[2], member, 1)
    if down(KEYS[3], ARGV[3], 1) <= 0 then
      redis.call('HDEL', KEYS[4], ARGV[3])
      removed = 1
    end
  end
end
return {redis.call('HLEN', KEYS[1]) == 0 and 1 or 0, removed}
",
    )
});

/// Undoes everything a node held, once: by a survivor when the node's heartbeat is older than
/// the node timeout (the first to remove it from the node set does it), or by the node itself
/// when it stops. KEYS: the node set, the node's held hash. ARGV: node, key prefix
/// (`<prefix>:`). Returns a flat list: `v, key` for a channel vacated, `r, key, user` for a
/// member removed.
pub static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 and redis.call('EXISTS', KEYS[2]) == 0 then
  return {}
end
local out = {}
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local field, n = held[i], tonumber(held[i + 1])
  local rest = string.sub(field, 3)
  if string.sub(field, 1, 1) == 's' then
    local subs = ARGV[2] .. 'subs:' .. rest
    redis.call('HDEL', subs, ARGV[1])
    if redis.call('HLEN', subs) == 0 then
      table.insert(out, 'v')
      table.insert(out, rest)
    end
  else
    local bar = string.find(rest, '|', 1, true)
    local key, user = string.sub(rest, 1, bar - 1), string.sub(rest, bar + 1)
    local members = ARGV[2] .. 'members:' .. key
    if redis.call('HINCRBY', members, user, -n) <= 0 then
      redis.call('HDEL', members, user)
      redis.call('HDEL', ARGV[2] .. 'info:' .. key, user)
      table.insert(out, 'r')
      table.insert(out, key)
      table.insert(out, user)
    end
  end
end
redis.call('DEL', KEYS[2])
return out
",
    )
});

/// The channels with Pusher subscribers anywhere in the cluster whose key matches a pattern.
/// ARGV: SCAN pattern (`<prefix>:subs:<key prefix>*`), the subscriptions' name prefix, the
/// members' name prefix. Returns a flat list of key, subscriptions, members.
pub static CHANNELS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
local cursor = '0'
repeat
  local page = redis.call('SCAN', cursor, 'MATCH', ARGV[1], 'COUNT', 1000)
  cursor = page[1]
  for _, name in ipairs(page[2]) do
    local total = 0
    for _, v in ipairs(redis.call('HVALS', name)) do total = total + tonumber(v) end
    if total > 0 then
      local key = string.sub(name, #ARGV[2] + 1)
      table.insert(out, key)
      table.insert(out, total)
      table.insert(out, redis.call('HLEN', ARGV[3] .. key))
    end
  end
until cursor == '0'
return out
",
    )
});
