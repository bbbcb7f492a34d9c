import type { Redis } from "ioredis";
import type { PubSub } from "../../pubsub.ts";
import {
  announce,
  type GroupSpec,
  listenForAppends,
  type SharedEntry,
  type SharedMessage,
  type SharedQueue,
} from "./queue.ts";

/** Where a queue says a scope has a new group. */
const GROUP_MADE_CHANNEL = "shared-group-made";
/** How long a worker reuses the answer "this tenant has no group". */
const GROUPS_CHECK_MS = 1000;

/** The Redis Stream consumer group every broker reads a group's queue through (one consumer per broker). */
const READERS = "brokers";

// Lua's matching of a topic against a filter: the same rule as topicMatches (share.ts).
const MATCHES = `
local function levels(s)
  local out = {}
  for level in string.gmatch(s .. '/', '([^/]*)/') do out[#out + 1] = level end
  return out
end
local function matches(filter, topic)
  local first = string.sub(filter, 1, 1)
  if (first == '+' or first == '#') and string.sub(topic, 1, 1) == '$' then return false end
  local f, t = levels(filter), levels(topic)
  for i = 1, #f do
    if f[i] == '#' then return i == #f end
    if i > #t then return false end
    if f[i] ~= '+' and f[i] ~= t[i] then return false end
  end
  return #f == #t
end
`;

/**
 * KEYS: the scopes' group indexes. ARGV: key prefix, most entries a group holds, then topic and
 * encoded message, pair by pair. Returns the count refused by full groups, then each group appended to.
 */
const APPEND_SCRIPT = `${MATCHES}
local prefix, max = ARGV[1], tonumber(ARGV[2])
local result = {0}
for k = 1, #KEYS do
  local groups = redis.call('HGETALL', KEYS[k])
  for g = 1, #groups, 2 do
    local queue = prefix .. 'q:' .. groups[g]
    for m = 3, #ARGV, 2 do
      if matches(groups[g + 1], ARGV[m]) then
        if redis.call('XLEN', queue) >= max then
          result[1] = result[1] + 1
        else
          redis.call('XADD', queue, '*', 'm', ARGV[m + 1])
          result[#result + 1] = groups[g]
        end
      end
    end
  end
end
return result`;

/** KEYS: scope index, group set, queue, members. ARGV: group id, filter, member, alive until. Returns 1 for a new group. */
const JOIN_SCRIPT = `
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4])
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[3], '${READERS}', '0', 'MKSTREAM')
  return 1
end
return 0`;

// Ends a group: its queue (and what it held for nobody) goes with it.
const END_GROUP = `
local function endGroup(prefix, groups, id)
  local scope = string.match(id, '^([^|]*)|')
  redis.call('HDEL', prefix .. 's:' .. scope, id)
  redis.call('SREM', groups, id)
  redis.call('DEL', prefix .. 'q:' .. id, prefix .. 'm:' .. id)
end
`;

/** KEYS: group set. ARGV: key prefix, group id, member. */
const LEAVE_SCRIPT = `${END_GROUP}
local prefix, id = ARGV[1], ARGV[2]
redis.call('HDEL', prefix .. 'm:' .. id, ARGV[3])
if redis.call('HLEN', prefix .. 'm:' .. id) == 0 then endGroup(prefix, KEYS[1], id) end`;

// Puts pending entries back at the end of their queue, for any broker to read.
const RELEASE = `
local function release(queue, ids)
  local released = 0
  if redis.call('EXISTS', queue) == 0 then return 0 end
  for _, id in ipairs(ids) do
    local entry = redis.call('XRANGE', queue, id, id)
    if #entry > 0 then
      redis.call('XADD', queue, '*', unpack(entry[1][2]))
      released = released + 1
    end
    redis.call('XACK', queue, '${READERS}', id)
    redis.call('XDEL', queue, id)
  end
  return released
end
`;

/** KEYS: the queue. ARGV: entry ids. */
const RELEASE_SCRIPT = `${RELEASE}
return release(KEYS[1], ARGV)`;

/**
 * KEYS: group set. ARGV: key prefix, now. Members past their time leave (a group left with none
 * ends); what brokers that stopped renewing their liveness key hold pending goes back to its queue.
 */
const SWEEP_SCRIPT = `${END_GROUP}${RELEASE}
local prefix, now = ARGV[1], tonumber(ARGV[2])
local released = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local members, queue = prefix .. 'm:' .. id, prefix .. 'q:' .. id
  local all = redis.call('HGETALL', members)
  for i = 1, #all, 2 do
    if tonumber(all[i + 1]) < now then redis.call('HDEL', members, all[i]) end
  end
  if redis.call('HLEN', members) == 0 then
    endGroup(prefix, KEYS[1], id)
  elseif redis.call('EXISTS', queue) == 1 then
    for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', queue, '${READERS}')) do
      local info = {}
      for i = 1, #consumer, 2 do info[consumer[i]] = consumer[i + 1] end
      if redis.call('EXISTS', prefix .. 'b:' .. info['name']) == 0 then
        local pending = redis.call('XPENDING', queue, '${READERS}', '-', '+', 1000, info['name'])
        local ids = {}
        for _, p in ipairs(pending) do ids[#ids + 1] = p[1] end
        released = released + release(queue, ids)
        if #pending < 1000 then redis.call('XGROUP', 'DELCONSUMER', queue, '${READERS}', info['name']) end
      end
    end
  end
end
return released`;

interface SharedCommands {
  edgeIngestShareAppend(...args: (string | number)[]): Promise<(string | number)[]>;
  edgeIngestShareJoin(...args: (string | number)[]): Promise<number>;
  edgeIngestShareLeave(...args: (string | number)[]): Promise<unknown>;
  edgeIngestShareRelease(...args: (string | number)[]): Promise<number>;
  edgeIngestShareSweep(...args: (string | number)[]): Promise<number>;
}

interface EncodedMessage {
  topic: string;
  payload: string;
  qos: SharedMessage["qos"];
  properties?: SharedMessage["properties"];
  messageExpiry?: number;
}

function encode(message: SharedMessage): string {
  const encoded: EncodedMessage = { ...message, payload: message.payload.toString("base64") };
  return JSON.stringify(encoded);
}

function decode(text: string): SharedMessage {
  const encoded = JSON.parse(text) as EncodedMessage;
  return { ...encoded, payload: Buffer.from(encoded.payload, "base64") };
}

/**
 * Distributed mode: each group's queue is a Redis Stream read through one consumer group, with one
 * consumer per broker, under `REDIS_PREFIX:share:` (`s:{scope}` the scope's groups and their filters,
 * `groups` every group, `q:{group}` its queue, `m:{group}` its members, `b:{broker}` a broker's
 * liveness). Each change is one Lua script, so a group is never half made or half ended.
 */
export class RedisSharedQueue implements SharedQueue {
  private readonly redis: Redis & SharedCommands;
  private readonly keys: string;
  private readonly groupSet: string;
  /** Scopes found without a group, until when that answer is reused. */
  private readonly absent = new Map<string, number>();
  /** Groups made (as heard): an answer asked across one is not reused. */
  private made = 0;
  private following: Promise<void> | undefined;

  constructor(
    redis: Redis,
    prefix: string,
    private readonly pubsub: PubSub,
    private readonly maxMessages: number,
  ) {
    this.keys = `${prefix}:share:`;
    this.groupSet = `${this.keys}groups`;
    redis.defineCommand("edgeIngestShareAppend", { lua: APPEND_SCRIPT });
    redis.defineCommand("edgeIngestShareJoin", { numberOfKeys: 4, lua: JOIN_SCRIPT });
    redis.defineCommand("edgeIngestShareLeave", { numberOfKeys: 1, lua: LEAVE_SCRIPT });
    redis.defineCommand("edgeIngestShareRelease", { numberOfKeys: 1, lua: RELEASE_SCRIPT });
    redis.defineCommand("edgeIngestShareSweep", { numberOfKeys: 1, lua: SWEEP_SCRIPT });
    this.redis = redis as Redis & SharedCommands;
  }

  private queue(groupId: string): string {
    return `${this.keys}q:${groupId}`;
  }

  async join(group: GroupSpec, memberId: string, aliveUntil: number): Promise<void> {
    const { keys } = this;
    const made = await this.redis.edgeIngestShareJoin(
      `${keys}s:${group.scope}`,
      this.groupSet,
      this.queue(group.id),
      `${keys}m:${group.id}`,
      group.id,
      group.filter,
      memberId,
      aliveUntil,
    );
    // Before the SUBACK: workers that remember "no group in this scope" forget it.
    if (made === 1) await this.pubsub.publish(GROUP_MADE_CHANNEL, group.scope);
  }

  async leave(groupId: string, memberId: string): Promise<void> {
    await this.redis.edgeIngestShareLeave(this.groupSet, this.keys, groupId, memberId);
  }

  /**
   * Asked by the worker for every submission: "no" is remembered for GROUPS_CHECK_MS, unless a
   * group of the scope is made meanwhile (or while the question was out).
   */
  async hasGroups(scope: string): Promise<boolean> {
    this.following ??= this.pubsub
      .subscribe(GROUP_MADE_CHANNEL, (made) => {
        this.made++;
        this.absent.delete(made);
      })
      .then(() => undefined)
      .catch((error: Error) => {
        this.following = undefined;
        throw error;
      });
    await this.following;
    const absentUntil = this.absent.get(scope);
    if (absentUntil !== undefined && absentUntil > Date.now()) return false;
    const made = this.made;
    const present = (await this.redis.exists(`${this.keys}s:${scope}`)) === 1;
    if (!present && made === this.made) {
      if (this.absent.size >= 10_000) this.absent.clear();
      this.absent.set(scope, Date.now() + GROUPS_CHECK_MS);
    }
    return present;
  }

  async append(scopes: string[], messages: SharedMessage[]): Promise<{ dropped: number }> {
    if (messages.length === 0) return { dropped: 0 };
    const args: (string | number)[] = [scopes.length, ...scopes.map((scope) => `${this.keys}s:${scope}`)];
    args.push(this.keys, this.maxMessages);
    for (const message of messages) args.push(message.topic, encode(message));
    const [dropped, ...appended] = await this.redis.edgeIngestShareAppend(...args);
    await announce(this.pubsub, appended as string[]);
    return { dropped: Number(dropped) };
  }

  async read(groupId: string, consumer: string, count: number): Promise<SharedEntry[]> {
    const reply = (await this.redis.xreadgroup(
      "GROUP",
      READERS,
      consumer,
      "COUNT",
      count,
      "STREAMS",
      this.queue(groupId),
      ">",
    )) as [string, [string, string[]][]][] | null;
    const entries = reply?.[0]?.[1] ?? [];
    return entries.map(([id, fields]) => ({ id, message: decode(fields[1] as string) }));
  }

  async ack(groupId: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    const queue = this.queue(groupId);
    await this.redis
      .multi()
      .xack(queue, READERS, ...ids)
      .xdel(queue, ...ids)
      .exec();
  }

  async release(groupId: string, ids: string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.redis.edgeIngestShareRelease(this.queue(groupId), ...ids);
    await announce(this.pubsub, [groupId]);
  }

  async heartbeat(consumer: string, ttlMs: number): Promise<void> {
    await this.redis.set(`${this.keys}b:${consumer}`, "1", "PX", ttlMs);
  }

  async sweep(now: number): Promise<{ released: number }> {
    return { released: Number(await this.redis.edgeIngestShareSweep(this.groupSet, this.keys, now)) };
  }

  onAppended(listener: (groupId: string) => void): Promise<() => void> {
    return listenForAppends(this.pubsub, listener);
  }
}
