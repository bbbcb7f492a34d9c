/**
 * A token bucket: `rate` tokens a second, holding at most `burst`. Times are epoch milliseconds,
 * passed in, so the arithmetic is a plain function of its inputs.
 */
export class TokenBucket {
  private tokens: number;
  private at: number;

  constructor(
    private rate: number,
    private burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.at = now;
  }

  /** New rate and burst, keeping what the bucket holds (up to the new burst). */
  configure(rate: number, burst: number, now: number): void {
    this.refill(now);
    this.rate = rate;
    this.burst = burst;
    this.tokens = Math.min(this.tokens, burst);
  }

  /**
   * Takes `n` tokens even if that leaves a debt (the work is already done), and returns how long,
   * in ms, until the debt is paid off (0: none).
   */
  take(n: number, now: number): number {
    this.refill(now);
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }

  /** How long until `n` tokens (at most a full bucket) are there to take; 0: now. */
  waitFor(n: number, now: number): number {
    this.refill(now);
    const need = Math.min(n, this.burst);
    return this.tokens >= need ? 0 : Math.ceil(((need - this.tokens) * 1000) / this.rate);
  }

  /**
   * Takes as many whole tokens as there are, up to `max`; returns how many it took and, when that
   * is fewer than `need`, how long until `need` could have been taken (0 otherwise).
   */
  takeUpTo(max: number, need: number, now: number): { granted: number; waitMs: number } {
    this.refill(now);
    const granted = Math.max(0, Math.min(max, Math.floor(this.tokens)));
    this.tokens -= granted;
    const missing = need - granted - this.tokens;
    return { granted, waitMs: granted >= need ? 0 : Math.ceil((missing * 1000) / this.rate) };
  }

  /** Whether the bucket is full: an idle bucket can be forgotten and made anew. */
  isFull(now: number): boolean {
    this.refill(now);
    return this.tokens >= this.burst;
  }

  private refill(now: number): void {
    if (now > this.at) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.rate) / 1000);
      this.at = now;
    }
  }
}
