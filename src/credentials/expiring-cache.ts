/**
 * What the credential lookups remember for a while: each entry for `ttlMs`, and at most
 * `maxEntries` of them, the oldest dropped first. Keys come from clients (a username, a client
 * certificate's fingerprint or issuer), so without the bound a client inventing new ones would grow
 * the process's memory for as long as it kept at it.
 */
export class ExpiringCache<V> {
  private readonly entries = new Map<string, { value: V; expires: number }>();

  constructor(
    private readonly ttlMs: number,
    private readonly maxEntries = 100_000,
  ) {}

  /** The value, while it has not expired. */
  get(key: string, now = Date.now()): V | undefined {
    const entry = this.entries.get(key);
    return entry && entry.expires > now ? entry.value : undefined;
  }

  set(key: string, value: V, now = Date.now()): void {
    // Set again, a key moves to the end: the first in the map is the oldest written.
    this.entries.delete(key);
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value as string);
    this.entries.set(key, { value, expires: now + this.ttlMs });
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  clear(): void {
    this.entries.clear();
  }

  get size(): number {
    return this.entries.size;
  }
}
