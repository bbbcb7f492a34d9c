import type { Redis } from "ioredis";

export interface RetainedLimits {
  maxMessages: number;
  maxBytes: number;
  maxMessagesPerPrincipal: number;
  maxBytesPerPrincipal: number;
}

interface Usage {
  messages: number;
  bytes: number;
}

/** What is retained on a topic now, and who retained it. */
interface Entry {
  owner: string;
  bytes: number;
}

/**
 * Whether `owner` may retain `bytes` on a topic that holds `previous` now (which the new message
 * replaces), given the usage in total and of `owner`. Returns why not, or undefined.
 */
export function retainedRefusal(
  limits: RetainedLimits,
  total: Usage,
  ofOwner: Usage,
  owner: string,
  bytes: number,
  previous: Entry | undefined,
): string | undefined {
  const replaced = previous ?? { owner, bytes: 0 };
  const count = previous ? 0 : 1;
  const ownCount = previous?.owner === owner ? 0 : 1;
  const ownReplaced = replaced.owner === owner ? replaced.bytes : 0;
  if (total.messages + count > limits.maxMessages) {
    return `the broker holds its ${limits.maxMessages} retained messages`;
  }
  if (total.bytes - replaced.bytes + bytes > limits.maxBytes) {
    return `the broker holds its ${limits.maxBytes} bytes of retained messages`;
  }
  if (ofOwner.messages + ownCount > limits.maxMessagesPerPrincipal) {
    return `this principal holds its ${limits.maxMessagesPerPrincipal} retained messages`;
  }
  if (ofOwner.bytes - ownReplaced + bytes > limits.maxBytesPerPrincipal) {
    return `this principal holds its ${limits.maxBytesPerPrincipal} bytes of retained messages`;
  }
  return undefined;
}

/**
 * An account of the retained messages the broker holds, by topic and by who retained them, that
 * refuses a retained message past the limits before the broker stores it.
 */
export interface RetainedLedger {
  /** Records `owner` retaining `bytes` on `topic` (replacing what was there); returns why not, if it may not. */
  claim(topic: string, owner: string, bytes: number): Promise<string | undefined>;
  /** Records that nothing is retained on `topic` any more. */
  release(topic: string): Promise<void>;
}

/** Embedded mode: retained messages live in this process only. */
export class LocalRetainedLedger implements RetainedLedger {
  private readonly entries = new Map<string, Entry>();
  private readonly usage = new Map<string, Usage>();
  private readonly total: Usage = { messages: 0, bytes: 0 };

  constructor(private readonly limits: RetainedLimits) {}

  private usageOf(owner: string): Usage {
    const usage = this.usage.get(owner) ?? { messages: 0, bytes: 0 };
    this.usage.set(owner, usage);
    return usage;
  }

  // The check and the bookkeeping run without yielding in between: claims arriving together
  // (a burst of retained publishes) are counted one after the other, never against the same count.
  async claim(topic: string, owner: string, bytes: number): Promise<string | undefined> {
    const previous = this.entries.get(topic);
    const refusal = retainedRefusal(this.limits, this.total, this.usageOf(owner), owner, bytes, previous);
    if (refusal) return refusal;
    this.forget(topic);
    this.entries.set(topic, { owner, bytes });
    this.add(owner, 1, bytes);
    return undefined;
  }

  async release(topic: string): Promise<void> {
    this.forget(topic);
  }

  private forget(topic: string): void {
    const previous = this.entries.get(topic);
    if (!previous) return;
    this.entries.delete(topic);
    this.add(previous.owner, -1, -previous.bytes);
  }

  private add(owner: string, messages: number, bytes: number): void {
    const usage = this.usageOf(owner);
    usage.messages += messages;
    usage.bytes += bytes;
    this.total.messages += messages;
    this.total.bytes += bytes;
  }
}

// retainedRefusal and the bookkeeping of LocalRetainedLedger, done atomically in Redis.
// KEYS: the ledger (topic -> "bytes|owner"), the usage (field -> count); ARGV: topic, owner,
// bytes (-1: release), then the four limits. Returns "" or the refusal.
const CLAIM_SCRIPT = `
local topic, owner, bytes = ARGV[1], ARGV[2], tonumber(ARGV[3])
local previous = redis.call('HGET', KEYS[1], topic)
local oldBytes, oldOwner = 0, nil
if previous then
  local bar = string.find(previous, '|', 1, true)
  oldBytes = tonumber(string.sub(previous, 1, bar - 1))
  oldOwner = string.sub(previous, bar + 1)
end
if bytes < 0 then
  if previous then
    redis.call('HDEL', KEYS[1], topic)
    redis.call('HINCRBY', KEYS[2], '*:messages', -1)
    redis.call('HINCRBY', KEYS[2], '*:bytes', -oldBytes)
    redis.call('HINCRBY', KEYS[2], oldOwner .. ':messages', -1)
    redis.call('HINCRBY', KEYS[2], oldOwner .. ':bytes', -oldBytes)
  end
  return ''
end
local usage = redis.call('HMGET', KEYS[2], '*:messages', '*:bytes', owner .. ':messages', owner .. ':bytes')
local totalMessages, totalBytes = tonumber(usage[1]) or 0, tonumber(usage[2]) or 0
local ownMessages, ownBytes = tonumber(usage[3]) or 0, tonumber(usage[4]) or 0
local count, ownCount, ownReplaced = 1, 1, 0
if previous then count = 0 end
if oldOwner == owner then ownCount = 0; ownReplaced = oldBytes end
if totalMessages + count > tonumber(ARGV[4]) then
  return 'the broker holds its ' .. ARGV[4] .. ' retained messages'
end
if totalBytes - oldBytes + bytes > tonumber(ARGV[5]) then
  return 'the broker holds its ' .. ARGV[5] .. ' bytes of retained messages'
end
if ownMessages + ownCount > tonumber(ARGV[6]) then
  return 'this principal holds its ' .. ARGV[6] .. ' retained messages'
end
if ownBytes - ownReplaced + bytes > tonumber(ARGV[7]) then
  return 'this principal holds its ' .. ARGV[7] .. ' bytes of retained messages'
end
if previous then
  redis.call('HINCRBY', KEYS[2], oldOwner .. ':messages', -1)
  redis.call('HINCRBY', KEYS[2], oldOwner .. ':bytes', -oldBytes)
end
redis.call('HSET', KEYS[1], topic, bytes .. '|' .. owner)
redis.call('HINCRBY', KEYS[2], '*:messages', count)
redis.call('HINCRBY', KEYS[2], '*:bytes', bytes - oldBytes)
redis.call('HINCRBY', KEYS[2], owner .. ':messages', 1)
redis.call('HINCRBY', KEYS[2], owner .. ':bytes', bytes)
return ''`;

type ClaimCommand = (
  ledger: string,
  usage: string,
  topic: string,
  owner: string,
  ...numbers: number[]
) => Promise<string>;

/** Distributed mode: the account lives in Redis, beside the retained messages every broker shares. */
export class RedisRetainedLedger implements RetainedLedger {
  private readonly claimCommand: ClaimCommand;

  constructor(
    redis: Redis,
    private readonly prefix: string,
    private readonly limits: RetainedLimits,
  ) {
    redis.defineCommand("edgeIngestRetainedClaim", { numberOfKeys: 2, lua: CLAIM_SCRIPT });
    this.claimCommand = (redis as unknown as { edgeIngestRetainedClaim: ClaimCommand }).edgeIngestRetainedClaim.bind(
      redis,
    );
  }

  private run(topic: string, owner: string, bytes: number): Promise<string> {
    const { maxMessages, maxBytes, maxMessagesPerPrincipal, maxBytesPerPrincipal } = this.limits;
    return this.claimCommand(
      `${this.prefix}:retained-ledger`,
      `${this.prefix}:retained-usage`,
      topic,
      owner,
      bytes,
      maxMessages,
      maxBytes,
      maxMessagesPerPrincipal,
      maxBytesPerPrincipal,
    );
  }

  async claim(topic: string, owner: string, bytes: number): Promise<string | undefined> {
    return (await this.run(topic, owner, bytes)) || undefined;
  }

  async release(topic: string): Promise<void> {
    await this.run(topic, "", -1);
  }
}
