import type { Redis } from "ioredis";
import { QueueUnavailableError } from "../errors.ts";

/** Fewer replicas than REDIS_MIN_REPLICAS confirmed a write in time: it must not be acknowledged. */
export class ReplicaShortfallError extends QueueUnavailableError {
  override name = "ReplicaShortfallError";
}

/**
 * Confirms that the writes made on one connection reached `minReplicas` replicas (Redis `WAIT`).
 * One WAIT is in flight at a time; the writes that complete meanwhile share the next, sent once it
 * returns. So a busy broker pays one replication round trip per round, not per submission, and
 * while replicas are missing the connection is blocked by one WAIT at a time (each up to the
 * timeout), not by a pile of them that would hold every later write for seconds.
 *
 * WAIT counts only the writes of its own connection. A connection that reconnected between a write
 * and the WAIT (after a failover, to a new primary) would confirm nothing it wrote before: a write
 * made on an earlier connection is a shortfall, never a confirmation.
 */
export class ReplicaWait {
  private connectionEpoch = 0;
  /** The next WAIT, not sent yet: a write that completes now is covered by it. */
  private next: Promise<{ replicas: number; epoch: number }> | undefined;
  /** Settles when the WAIT in flight has returned. */
  private inFlight: Promise<unknown> = Promise.resolve();
  /** Replicas that confirmed the last WAIT to return. */
  private lastConfirmed: number | undefined;

  constructor(
    private readonly connection: Redis,
    readonly minReplicas: number,
    private readonly timeoutMs: number,
  ) {
    connection.on("ready", () => this.connectionEpoch++);
  }

  /** Call before the write; pass the result to `confirm` once the write is done. */
  get epoch(): number {
    return this.connectionEpoch;
  }

  /** Why nothing can be acknowledged now, while the last WAIT came back short. */
  get shortfall(): string | undefined {
    return this.lastConfirmed !== undefined && this.lastConfirmed < this.minReplicas
      ? `${this.lastConfirmed} of REDIS_MIN_REPLICAS=${this.minReplicas} replicas confirm the queue's writes`
      : undefined;
  }

  /**
   * While short, asks again with a WAIT of its own, which counts the replicas that have this
   * connection's last write: so the shortfall ends when the replicas are back, whether or not
   * anything is written meanwhile (a broker that is not ready may get no traffic to find out by).
   */
  async recheck(timeoutMs: number): Promise<string | undefined> {
    if (this.shortfall === undefined) return undefined;
    this.lastConfirmed = Number(await this.connection.call("WAIT", this.minReplicas, timeoutMs));
    return this.shortfall;
  }

  async confirm(writtenAt: number): Promise<void> {
    this.next ??= this.inFlight
      .then(() => new Promise((resolve) => setImmediate(resolve)))
      .then(() => {
        this.next = undefined;
        const epoch = this.connectionEpoch;
        const wait = this.connection.call("WAIT", this.minReplicas, this.timeoutMs).then((replicas) => {
          this.lastConfirmed = Number(replicas);
          return { replicas: this.lastConfirmed, epoch };
        });
        this.inFlight = wait.catch(() => undefined);
        return wait;
      });
    const { replicas, epoch } = await this.next;
    if (epoch !== writtenAt) {
      throw new ReplicaShortfallError("the connection to Redis changed before the replicas confirmed the write");
    }
    if (replicas < this.minReplicas) {
      throw new ReplicaShortfallError(
        `${replicas} of REDIS_MIN_REPLICAS=${this.minReplicas} replicas confirmed the write within REDIS_REPLICA_TIMEOUT_MS`,
      );
    }
  }
}
