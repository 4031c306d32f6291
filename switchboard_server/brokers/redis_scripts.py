"""The Redis broker's Lua scripts and key names, in one place.

Each script runs atomically on one Redis instance, so a channel's offsets, history and pub/sub
stay in step whichever worker calls it. Every key of a channel (and its pub/sub) lives on the
instance its name hashes to (`redis.RedisBroker`), so no script ever touches two instances.

Fan-out goes over buses, not one pub/sub channel per channel: a channel belongs to bus
`sb:bus:<n>` (n from the SHA1 of its name, modulo the partition count), and a worker subscribes
to the buses of the channels it holds. A publish script sends one PUBLISH per bus it touched,
carrying every message of that batch for that bus (an envelope), so a worker reads one pub/sub
message per batch instead of one per publication. An envelope is a run of records, each
`<len>:<channel><len>:<body>` (lengths in bytes), where the body is `m<offset> <epoch> <exclude>
<payload>` for a message or `p<exclude> <json>` for a join, leave or presence notice. Published
inside the script, envelopes reach every worker in offset order.

Keys (all prefixed `sb:`): `{C}:m` hash (epoch, offset), `{C}:s` stream (history), `{C}:k:<key>`
string (the offset a publish with that idempotency key got, for the window), `{C}:u` hash
(user -> workers holding it), `{C}:i` hash (user -> info JSON), `{C}:o` set (workers with
subscribers on it), `w:<id>` set (the channel\\0user a worker holds), `n:<id>` hash (a worker's
subscribers per channel), `workers` sorted set (worker -> last heartbeat). With several
instances, the last three exist on each, covering that instance's channels.

Where those keys and buses are is a `KeySpace`: the default above for a Redis of its own, or one
partition of a Redis Cluster (`redis_cluster`), whose keys and single bus all carry the
partition's hash tag (`sb:{<tag>}:...`), so each script call touches one slot and the bus is a
shard channel of that slot, published with SPUBLISH. The scripts take the key prefix and the
publish command as arguments, so one set of scripts serves both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from switchboard_server.brokers.pipeline import Script

CONTROL = "sb:control"


@lru_cache(maxsize=65536)
def bus_of(channel: str, partitions: int, prefix: str = "sb:") -> str:
    """The pub/sub channel that carries `channel`'s messages (the same rule as `bus_of` in Lua)."""
    return f"{prefix}bus:{int(hashlib.sha1(channel.encode()).hexdigest()[:8], 16) % partitions}"


@dataclass(frozen=True)
class KeySpace:
    """Where one shard's keys and buses are, and how its scripts publish to a bus.

    `prefix` starts every key and bus name (`sb:` alone, or `sb:{<tag>}:` for a cluster
    partition); `buses` is how many buses its channels are spread over; `publish` is PUBLISH, or
    SPUBLISH for a shard channel of a Redis Cluster.
    """

    prefix: str = "sb:"
    buses: int = 16
    publish: str = "PUBLISH"

    def key(self, channel: str, part: str) -> str:
        return f"{self.prefix}{{{channel}}}:{part}"

    def bus(self, channel: str) -> str:
        return bus_of(channel, self.buses, self.prefix)

    @property
    def workers(self) -> str:
        return f"{self.prefix}workers"

    def held(self, worker: str) -> str:
        """The set of channel\\0user entries `worker` holds."""
        return f"{self.prefix}w:{worker}"

    def counts(self, worker: str) -> str:
        """The hash of `worker`'s subscribers per channel."""
        return f"{self.prefix}n:{worker}"


# Lua helpers shared by the scripts that publish: the bus of a channel, and one envelope record.
_HELPERS = """
local function bus_of(prefix, channel, partitions)
  return prefix .. 'bus:' .. (tonumber(string.sub(redis.sha1hex(channel), 1, 8), 16) % partitions)
end
local function record(channel, body)
  return #channel .. ':' .. channel .. #body .. ':' .. body
end
"""

# KEYS: per message, its meta, stream and idempotency key (three each).
# ARGV: the key window in seconds, the publish command, then per message nine: channel, bus,
# head, tail, epoch if new, "1" when it has an idempotency key, the connection to exclude ("" for
# none; ids never hold a space), and the history size and TTL seconds of the channel's namespace.
# Returns each message's offset (for a repeated
# idempotency key, the one that publish got, and nothing is sent).
PUBLISH = Script(
    _HELPERS
    + """
local window, publish = ARGV[1], ARGV[2]
local offsets, envelopes, buses = {}, {}, {}
for i = 0, #KEYS / 3 - 1 do
  local meta, stream, key = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local a = 2 + 9 * i
  local channel, bus, new_epoch, keyed, exclude = ARGV[a + 1], ARGV[a + 2], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  local size, ttl = tonumber(ARGV[a + 8]), ARGV[a + 9]
  local seen = keyed == '1' and redis.call('GET', key)
  if seen then
    offsets[i + 1] = tonumber(seen)
  else
    local offset = redis.call('HINCRBY', meta, 'offset', 1)
    if keyed == '1' then redis.call('SET', key, offset, 'EX', window) end
    redis.call('HSETNX', meta, 'epoch', new_epoch)
    local payload = ARGV[a + 3] .. offset .. ARGV[a + 4]
    if size > 0 then
      redis.call('XADD', stream, 'MAXLEN', size, offset .. '-0', 'd', payload)
      redis.call('EXPIRE', stream, ttl)
    end
    redis.call('EXPIRE', meta, ttl)
    local epoch = redis.call('HGET', meta, 'epoch')
    local records = envelopes[bus]
    if not records then
      records = {}
      envelopes[bus] = records
      buses[#buses + 1] = bus
    end
    records[#records + 1] = record(channel, 'm' .. offset .. ' ' .. epoch .. ' ' .. exclude .. ' ' .. payload)
    offsets[i + 1] = offset
  end
end
for _, bus in ipairs(buses) do redis.call(publish, bus, table.concat(envelopes[bus])) end
return offsets
"""
)

# KEYS: meta, stream. ARGV: epoch if new, ttl seconds, first stream id wanted ("" for none), count
# ("" for all). A channel read before its first publish gets its epoch now, or the first publish
# would change it under the subscriber and void its offsets. One script, so no publish falls
# between the last offset and the entries read.
HISTORY = Script("""
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
if ARGV[3] == '' then return {meta[1], meta[2] or '0'} end
local entries
if ARGV[4] == '' then
  entries = redis.call('XRANGE', KEYS[2], ARGV[3], '+')
else
  entries = redis.call('XRANGE', KEYS[2], ARGV[3], '+', 'COUNT', ARGV[4])
end
return {meta[1], meta[2] or '0', entries}
""")

# KEYS: meta. ARGV: the epoch whose history forked, a new epoch. A failover lost messages some
# subscribers already had, and new ones took their offsets: from now on the channel is in a new
# epoch, so a client resuming with an offset of the old one is told nothing can be replayed
# (unless another worker already moved it on). Returns {epoch, offset}.
FORK = Script("""
if redis.call('HGET', KEYS[1], 'epoch') == ARGV[1] then redis.call('HSET', KEYS[1], 'epoch', ARGV[2]) end
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
return {meta[1], meta[2] or '0'}
""")

# Join/leave are published only while the channel has at most the push limit of members (with
# the changing one counted in); crossing it publishes the notice instead (hub.channels.member_push).

# KEYS: users, infos, worker set, bus.
# ARGV: user, info JSON, held entry, join JSON, excluded connection id, push limit, notice JSON, channel,
# publish command.
JOIN = Script(
    _HELPERS
    + """
if redis.call('SADD', KEYS[3], ARGV[3]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('HINCRBY', KEYS[1], ARGV[1], 1) == 1 then
  local members, limit = redis.call('HLEN', KEYS[1]), tonumber(ARGV[6])
  if members <= limit then
    redis.call(ARGV[9], KEYS[4], record(ARGV[8], 'p' .. ARGV[5] .. ' ' .. ARGV[4]))
  elseif members == limit + 1 and limit > 0 then
    redis.call(ARGV[9], KEYS[4], record(ARGV[8], 'p' .. ARGV[5] .. ' ' .. ARGV[7]))
  end
  return 1
end
return 0
"""
)

# KEYS: users, infos, worker set, bus. ARGV: user, held entry, leave JSON, push limit, notice
# JSON, channel, publish command.
LEAVE = Script(
    _HELPERS
    + """
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  local members, limit = redis.call('HLEN', KEYS[1]) + 1, tonumber(ARGV[4])
  if members <= limit then
    redis.call(ARGV[7], KEYS[4], record(ARGV[6], 'p ' .. ARGV[3]))
  elseif members == limit + 1 and limit > 0 then
    redis.call(ARGV[7], KEYS[4], record(ARGV[6], 'p ' .. ARGV[5]))
  end
  return 1
end
return 0
"""
)

# KEYS: the worker's counts, the channel's occupying workers. ARGV: channel, subscribers, worker.
# Returns 1 when the channel just got its first occupying worker, -1 when it lost its last, else 0.
COUNT = Script("""
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  if redis.call('SADD', KEYS[2], ARGV[3]) == 1 and redis.call('SCARD', KEYS[2]) == 1 then return 1 end
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('SREM', KEYS[2], ARGV[3]) == 1 and redis.call('SCARD', KEYS[2]) == 0 then return -1 end
return 0
""")

# KEYS: workers, the dead worker's set and counts. ARGV: worker id, push limit, buses, key prefix,
# publish command. Only
# the first reaper gets past ZREM. Returns nil, or {entries held, {channel, user, info JSON, ...}
# of the members who left, {channel, ...} the channels it was the last occupant of}.
REAP = Script(
    _HELPERS
    + """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
local held = redis.call('SMEMBERS', KEYS[2])
local removed, vacated = {}, {}
local limit, partitions, prefix, publish = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], ARGV[5]
for _, entry in ipairs(held) do
  local sep = string.find(entry, '\\0', 1, true)
  local channel = string.sub(entry, 1, sep - 1)
  local user = string.sub(entry, sep + 1)
  local users = prefix .. '{' .. channel .. '}:u'
  local infos = prefix .. '{' .. channel .. '}:i'
  if redis.call('HINCRBY', users, user, -1) <= 0 then
    local info = redis.call('HGET', infos, user) or 'null'
    redis.call('HDEL', users, user)
    redis.call('HDEL', infos, user)
    local members = redis.call('HLEN', users) + 1
    if members <= limit then
      local leave = '{"type":"leave","channel":' .. cjson.encode(channel) ..
        ',"member":{"user":' .. cjson.encode(user) .. ',"info":' .. info .. '}}'
      redis.call(publish, bus_of(prefix, channel, partitions), record(channel, 'p ' .. leave))
    elseif members == limit + 1 and limit > 0 then
      local notice = '{"type":"presence","channel":' .. cjson.encode(channel) .. ',"pushes":true}'
      redis.call(publish, bus_of(prefix, channel, partitions), record(channel, 'p ' .. notice))
    end
    table.insert(removed, channel)
    table.insert(removed, user)
    table.insert(removed, info)
  end
end
for _, channel in ipairs(redis.call('HKEYS', KEYS[3])) do
  local occupying = prefix .. '{' .. channel .. '}:o'
  if redis.call('SREM', occupying, ARGV[1]) == 1 and redis.call('SCARD', occupying) == 0 then
    table.insert(vacated, channel)
  end
end
redis.call('DEL', KEYS[2], KEYS[3])
return {#held, removed, vacated}
"""
)

ALL = [PUBLISH, HISTORY, FORK, JOIN, LEAVE, COUNT, REAP]


def envelope_records(data: bytes) -> list[tuple[str, bytes]]:
    """The (channel, body) records of one envelope."""
    records = []
    position, end = 0, len(data)
    while position < end:
        colon = data.index(b":", position)
        start = colon + 1
        channel = data[start : start + int(data[position:colon])]
        position = start + len(channel)
        colon = data.index(b":", position)
        start = colon + 1
        length = int(data[position:colon])
        records.append((channel.decode(), data[start : start + length]))
        position = start + length
    return records
