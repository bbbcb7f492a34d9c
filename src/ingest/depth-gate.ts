/**
 * Holds producers while the queue is deeper than `maxDepth` jobs, so a broker whose workers fall
 * behind stops acknowledging (and its publishers slow down) instead of growing the queue without
 * bound. The depth is sampled every `intervalMs`, never on the publish path itself.
 */
export class DepthGate {
  private depth = 0;
  private waiters: (() => void)[] = [];
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly readDepth: () => Promise<number>,
    private readonly maxDepth: number,
    intervalMs: number,
    onError: (error: Error) => void,
  ) {
    this.timer = setInterval(() => {
      this.readDepth().then(
        (depth) => {
          this.depth = depth;
          if (depth < this.maxDepth) for (const wake of this.waiters.splice(0)) wake();
        },
        (error: Error) => onError(error),
      );
    }, intervalMs);
    this.timer.unref();
  }

  get open(): boolean {
    return this.depth < this.maxDepth;
  }

  /** Resolves at once while the queue is shallow enough, else once it has drained below the limit. */
  admit(): Promise<void> {
    return this.open ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Lets everybody through (shutdown: the batches still pending must be flushed). */
  close(): void {
    clearInterval(this.timer);
    this.depth = 0;
    for (const wake of this.waiters.splice(0)) wake();
  }
}
