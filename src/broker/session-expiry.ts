import type { Aedes, Client } from "aedes";
import type { Redis } from "ioredis";

/**
 * When each persistent session of a disconnected client ends, unless the client comes back first:
 * an MQTT 5 client's Session Expiry Interval, at most `MQTT_MAX_SESSION_EXPIRY_SECONDS`, which is
 * also what a 3.1.1 client with CleanSession=0 gets. Shared by every broker in distributed mode, so
 * a client that reconnects to another broker keeps its session, and each expired session is removed
 * by one broker.
 */
export interface SessionExpiryStore {
  /**
   * A client connected with a persistent session: it no longer ends. Returns the connection's
   * generation, which a later `disconnected` must carry.
   */
  connected(clientId: string): Promise<number>;
  /**
   * The connection of that generation closed: the session ends at `expiresAt` (epoch ms) unless the
   * client reconnects. A connection that was taken over (a newer generation exists, on any broker)
   * schedules nothing.
   */
  disconnected(clientId: string, generation: number, expiresAt: number): Promise<void>;
  /**
   * A client connected with a clean session: nothing of an earlier one is left to end, and a
   * disconnect of an older connection schedules nothing.
   */
  cleared(clientId: string): Promise<void>;
  /** Takes up to `limit` sessions that ended by `now`: each is handed to one caller only. */
  claimExpired(now: number, limit: number): Promise<string[]>;
  /** Sessions of disconnected clients, waiting to end. */
  waiting(): Promise<number>;
}

/** Embedded mode: one broker. */
export class LocalSessionExpiry implements SessionExpiryStore {
  private readonly ends = new Map<string, number>();
  private readonly generations = new Map<string, number>();

  async connected(clientId: string): Promise<number> {
    this.ends.delete(clientId);
    const generation = (this.generations.get(clientId) ?? 0) + 1;
    this.generations.set(clientId, generation);
    return generation;
  }

  async disconnected(clientId: string, generation: number, expiresAt: number): Promise<void> {
    if (this.generations.get(clientId) === generation) this.ends.set(clientId, expiresAt);
  }

  async cleared(clientId: string): Promise<void> {
    this.ends.delete(clientId);
    this.generations.delete(clientId);
  }

  async claimExpired(now: number, limit: number): Promise<string[]> {
    const claimed: string[] = [];
    for (const [clientId, expiresAt] of this.ends) {
      if (claimed.length >= limit) break;
      if (expiresAt > now) continue;
      this.ends.delete(clientId);
      this.generations.delete(clientId);
      claimed.push(clientId);
    }
    return claimed;
  }

  async waiting(): Promise<number> {
    return this.ends.size;
  }
}

// KEYS[1]: sorted set, client id -> when its session ends; KEYS[2]: hash, client id -> generation
// of its latest connection.
const CONNECTED_SCRIPT = `redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('HINCRBY', KEYS[2], ARGV[1], 1)`;
const DISCONNECTED_SCRIPT = `if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end
return 1`;
const CLEARED_SCRIPT = `redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1`;
const CLAIM_SCRIPT = `local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then
  redis.call('ZREM', KEYS[1], unpack(due))
  redis.call('HDEL', KEYS[2], unpack(due))
end
return due`;

interface ExpiryCommands {
  edgeIngestSessionConnected(ends: string, generations: string, clientId: string): Promise<number>;
  edgeIngestSessionDisconnected(
    ends: string,
    generations: string,
    clientId: string,
    generation: number,
    expiresAt: number,
  ): Promise<number>;
  edgeIngestSessionCleared(ends: string, generations: string, clientId: string): Promise<number>;
  edgeIngestSessionClaim(ends: string, generations: string, now: number, limit: number): Promise<string[]>;
}

/** Distributed mode: in Redis, beside the sessions aedes-persistence-redis keeps. */
export class RedisSessionExpiry implements SessionExpiryStore {
  private readonly redis: Redis & ExpiryCommands;
  private readonly ends: string;
  private readonly generations: string;

  constructor(redis: Redis, prefix: string) {
    this.ends = `${prefix}:mqtt-session-ends`;
    this.generations = `${prefix}:mqtt-session-generations`;
    redis.defineCommand("edgeIngestSessionConnected", { numberOfKeys: 2, lua: CONNECTED_SCRIPT });
    redis.defineCommand("edgeIngestSessionDisconnected", { numberOfKeys: 2, lua: DISCONNECTED_SCRIPT });
    redis.defineCommand("edgeIngestSessionCleared", { numberOfKeys: 2, lua: CLEARED_SCRIPT });
    redis.defineCommand("edgeIngestSessionClaim", { numberOfKeys: 2, lua: CLAIM_SCRIPT });
    this.redis = redis as Redis & ExpiryCommands;
  }

  async connected(clientId: string): Promise<number> {
    return Number(await this.redis.edgeIngestSessionConnected(this.ends, this.generations, clientId));
  }

  async disconnected(clientId: string, generation: number, expiresAt: number): Promise<void> {
    await this.redis.edgeIngestSessionDisconnected(this.ends, this.generations, clientId, generation, expiresAt);
  }

  async cleared(clientId: string): Promise<void> {
    await this.redis.edgeIngestSessionCleared(this.ends, this.generations, clientId);
  }

  claimExpired(now: number, limit: number): Promise<string[]> {
    return this.redis.edgeIngestSessionClaim(this.ends, this.generations, now, limit);
  }

  waiting(): Promise<number> {
    return this.redis.zcard(this.ends);
  }
}

/** How often a broker looks for sessions that ended, and how many it removes at a time. */
const SWEEP_MS = 1000;
const SWEEP_BATCH = 100;

/** The persistence calls a session's removal needs (aedes-persistence's interface). */
interface SessionPersistence {
  cleanSubscriptions(client: { id: string }): Promise<unknown>;
  outgoingStream(client: { id: string }): AsyncIterable<{ messageId?: number }>;
  outgoingClearMessageId(client: { id: string }, packet: { messageId?: number }): Promise<unknown>;
  cleanIncoming?(client: { id: string }): Promise<unknown>;
}

/**
 * Ends the persistent sessions of clients that stay away past their expiry: their subscriptions,
 * queued messages and QoS 2 state go, so a fleet of devices that never return does not grow the
 * session store forever. The connect hook calls `connected` before Aedes restores the session;
 * `expiryOf` says how long a client's session outlives its connection (0: it ends with it).
 */
export class SessionExpiry {
  private readonly generations = new WeakMap<Client, number>();
  private readonly timer: NodeJS.Timeout;
  private sweeping = false;
  private readonly onDisconnect = (client: Client) => {
    const generation = this.generations.get(client);
    const seconds = this.expiryOf(client);
    if (generation === undefined || client.clean || seconds <= 0) return;
    this.store.disconnected(client.id, generation, Date.now() + seconds * 1000).catch(this.onError);
  };

  constructor(
    private readonly broker: Aedes,
    private readonly store: SessionExpiryStore,
    private readonly expiryOf: (client: Client) => number,
    /** An MQTT 5 Clean Start with a session that outlives the connection: the old session goes first. */
    private readonly startsClean: (client: Client) => boolean,
    private readonly onExpired: (count: number) => void,
    private readonly onError: (error: Error) => void,
  ) {
    broker.on("clientDisconnect", this.onDisconnect);
    this.timer = setInterval(() => void this.sweep(), SWEEP_MS).unref();
  }

  /** A client authenticated: a persistent session of its stops ending (or, on a clean start, ends now). */
  async connected(client: Client): Promise<void> {
    // A clean session wipes what the client id had: its bookkeeping goes too, so ids that come
    // and go with clean sessions leave nothing behind. Not awaited: a clean connect (most of a
    // fleet's) waits for no Redis round trip of this.
    if (client.clean) {
      this.store.cleared(client.id).catch(this.onError);
      return;
    }
    this.generations.set(client, await this.store.connected(client.id));
    if (this.startsClean(client)) await this.remove(client.id);
  }

  /** Removes a session's subscriptions, queued messages and QoS 2 state. */
  private async remove(id: string): Promise<void> {
    const persistence = this.broker.persistence as unknown as SessionPersistence;
    const session = { id };
    await persistence.cleanSubscriptions(session);
    for await (const packet of persistence.outgoingStream(session)) {
      await persistence.outgoingClearMessageId(session, packet);
    }
    await persistence.cleanIncoming?.(session);
  }

  private async sweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    try {
      const ended = await this.store.claimExpired(Date.now(), SWEEP_BATCH);
      for (const id of ended) await this.remove(id);
      if (ended.length > 0) this.onExpired(ended.length);
    } catch (error) {
      this.onError(error as Error);
    } finally {
      this.sweeping = false;
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.broker.off("clientDisconnect", this.onDisconnect);
  }
}
