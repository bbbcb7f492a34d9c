import type { Logger } from "pino";

interface Waiting {
  since: number;
  /** What it waits on now (the dependency a log line names). */
  on: string;
}

/** How often the oldest waiting operation is looked at. */
const TICK_MS = 1000;

/**
 * Watches operations that wait on a dependency (submissions waiting to be acknowledged, jobs waiting
 * to be stored). When the oldest has waited `noticeMs`, one warning names what it waits on; when
 * none has any more, one line says for how long and how many were held. A hung dependency therefore
 * shows within `noticeMs` + 1 s, however long it hangs and whether or not it ever raises an error.
 */
export class StallWatch {
  private readonly waiting = new Set<Waiting>();
  private readonly timer: NodeJS.Timeout;
  private stall: { since: number; on: string; held: number } | undefined;

  constructor(
    /** What is held, for the log lines: "acknowledgements", "storage". */
    private readonly what: string,
    private readonly noticeMs: number,
    private readonly logger: Logger,
  ) {
    this.timer = setInterval(() => this.look(Date.now()), TICK_MS).unref();
  }

  /** Tracks `work` while it runs; `on` names what it waits on and may change (`waitOn`). */
  track<T>(on: string, work: (waiting: { waitOn(on: string): void }) => Promise<T>): Promise<T> {
    const entry: Waiting = { since: Date.now(), on };
    this.waiting.add(entry);
    if (this.stall) this.stall.held++;
    const waitOn = (next: string) => {
      entry.on = next;
    };
    return work({ waitOn }).finally(() => this.waiting.delete(entry));
  }

  /** Operations that have waited `noticeMs` or longer, and how long the oldest has (seconds). */
  held(now = Date.now()): { count: number; oldestSeconds: number } {
    let count = 0;
    for (const { since } of this.waiting) {
      if (now - since < this.noticeMs) break;
      count++;
    }
    const oldest = this.oldest();
    return { count, oldestSeconds: oldest ? (now - oldest.since) / 1000 : 0 };
  }

  /** The set keeps the order operations started in: the oldest is the first. */
  private oldest(): Waiting | undefined {
    return this.waiting.values().next().value;
  }

  private look(now: number): void {
    const oldest = this.oldest();
    const stalled = oldest !== undefined && now - oldest.since >= this.noticeMs;
    if (stalled && !this.stall) {
      this.stall = { since: oldest.since, on: oldest.on, held: this.waiting.size };
      this.logger.warn(
        { held: this.what, on: oldest.on, waiting: this.waiting.size, seconds: (now - oldest.since) / 1000 },
        `${this.what} held: waiting on ${oldest.on}`,
      );
    } else if (!stalled && this.stall) {
      const { since, on, held } = this.stall;
      this.stall = undefined;
      this.logger.info(
        { held: this.what, on, count: held, seconds: (now - since) / 1000 },
        `${this.what} flowing again`,
      );
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}
