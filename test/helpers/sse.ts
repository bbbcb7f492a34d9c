/** A real Server-Sent-Events client over fetch; resolves once the server says it is connected. */
export interface EventStream {
  events: { event: string; data: any }[];
  /** Waits until `count` metric events have arrived. */
  waitFor(count: number, timeoutMs?: number): Promise<{ event: string; data: any }[]>;
  /** Settles when the server ends the stream. */
  ended: Promise<void>;
  close(): void;
}

export async function openStream(url: string, headers: Record<string, string> = {}): Promise<EventStream> {
  const controller = new AbortController();
  const response = await fetch(url, { headers, signal: controller.signal });
  const body = response.body;
  if (response.status !== 200 || !body) {
    throw new Error(`stream answered ${response.status}: ${await response.text()}`);
  }
  const events: { event: string; data: any }[] = [];
  const waiters = new Set<() => void>();
  let connected!: () => void;
  const ready = new Promise<void>((resolve) => (connected = resolve));
  const decoder = new TextDecoder();
  let buffer = "";
  const ended = (async () => {
    const reader = body.getReader();
    for (;;) {
      const { value, done } = await reader.read().catch(() => ({ value: undefined, done: true }));
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end = buffer.indexOf("\n\n");
      while (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        if (block.includes(": connected")) connected();
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event && data) events.push({ event, data: JSON.parse(data) });
        for (const wake of waiters) wake();
        end = buffer.indexOf("\n\n");
      }
    }
  })();
  await ready;
  return {
    events,
    ended,
    waitFor: (count, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (events.length >= count) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(events);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`only ${events.length} of ${count} events within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
    close: () => controller.abort(),
  };
}
