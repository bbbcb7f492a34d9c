import type { Redis } from "ioredis";
import { QueueUnavailableError } from "../errors.ts";

/** Fewer replicas than REDIS_MIN_REPLICAS confirmed a write in time: it must not be acknowledged. */
export class ReplicaShortfallError extends QueueUnavailableError {
  override name = "ReplicaShortfallError";
}

/**
 * Confirms that the writes made on one connection reached `minReplicas` replicas (Redis `WAIT`).
 * The writes that completed in one event-loop turn share one WAIT, sent after all of them, so a
 * busy broker pays one replication round trip per turn rather than per submission.
 *
 * WAIT counts only the writes of its own connection. A connection that reconnected between a write
 * and the WAIT (after a failover, to a new primary) would confirm nothing it wrote before: a write
 * made on an earlier connection is a shortfall, never a confirmation.
 */
export class ReplicaWait {
  private connectionEpoch = 0;
  private pending: Promise<{ replicas: number; epoch: number }> | undefined;

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

  async confirm(writtenAt: number): Promise<void> {
    this.pending ??= new Promise((resolve) => setImmediate(resolve)).then(async () => {
      this.pending = undefined;
      const epoch = this.connectionEpoch;
      return { replicas: Number(await this.connection.call("WAIT", this.minReplicas, this.timeoutMs)), epoch };
    });
    const { replicas, epoch } = await this.pending;
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
