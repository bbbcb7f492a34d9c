/**
 * Collects the keys asked for in one turn of the event loop and loads them with one call (at most
 * `maxKeys` a call); each `load` settles with its own key's value, or null when the call did not
 * find it.
 */
export class LookupBatch<V> {
  private pending = new Map<string, { resolve(value: V | null): void; reject(error: unknown): void }[]>();
  private scheduled = false;

  constructor(
    private readonly loadMany: (keys: string[]) => Promise<Map<string, V>>,
    private readonly maxKeys = 1000,
  ) {}

  load(key: string): Promise<V | null> {
    return new Promise((resolve, reject) => {
      const waiting = this.pending.get(key) ?? [];
      waiting.push({ resolve, reject });
      this.pending.set(key, waiting);
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const all = [...this.pending];
    this.pending = new Map();
    for (let i = 0; i < all.length; i += this.maxKeys) {
      const chunk = all.slice(i, i + this.maxKeys);
      this.loadMany(chunk.map(([key]) => key)).then(
        (found) => {
          for (const [key, waiting] of chunk) for (const w of waiting) w.resolve(found.get(key) ?? null);
        },
        (error: unknown) => {
          for (const [, waiting] of chunk) for (const w of waiting) w.reject(error);
        },
      );
    }
  }
}
