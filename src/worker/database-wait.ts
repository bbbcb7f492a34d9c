import type { Logger } from "pino";

export class DatabaseWaitClosed extends Error {
  override name = "DatabaseWaitClosed";
}

/**
 * What a worker's jobs do when the database is down: they all wait for one probe loop (a capped
 * exponential backoff), instead of each failing an attempt. One line is logged when the wait starts
 * and one when it ends, however long it lasts and however many jobs wait.
 */
export class DatabaseWait {
  private waiting: Promise<void> | undefined;
  private closed = false;
  private wake: (() => void) | undefined;

  constructor(
    private readonly probe: () => Promise<void>,
    private readonly firstDelayMs: number,
    private readonly maxDelayMs: number,
    private readonly logger: Logger,
  ) {}

  /** Resolves once the database answers again; rejects with DatabaseWaitClosed at shutdown. */
  untilAvailable(cause: unknown): Promise<void> {
    if (this.closed) return Promise.reject(new DatabaseWaitClosed("the worker is stopping"));
    this.waiting ??= this.loop(cause).finally(() => {
      this.waiting = undefined;
    });
    return this.waiting;
  }

  private async loop(cause: unknown): Promise<void> {
    const since = Date.now();
    this.logger.warn(
      { reason: (cause as Error)?.message?.split("\n").filter(Boolean).pop() },
      "database unavailable: jobs wait for it and none is failed meanwhile",
    );
    for (let delay = this.firstDelayMs; ; delay = Math.min(delay * 2, this.maxDelayMs)) {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, delay);
      });
      if (this.closed) throw new DatabaseWaitClosed("the worker is stopping");
      try {
        await this.probe();
        break;
      } catch {}
    }
    this.logger.info({ seconds: (Date.now() - since) / 1000 }, "database available again: the waiting jobs go on");
  }

  /** Ends any wait at once (the waiting jobs are put back for later). */
  close(): void {
    this.closed = true;
    this.wake?.();
  }
}
