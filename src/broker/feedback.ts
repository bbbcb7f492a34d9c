import type { RejectionReason } from "../ingest/refusals.ts";

/** What an agent is told of one refused publish (or one item of a batch). */
export interface Feedback {
  topic: string;
  reason: RejectionReason;
  message: string;
  index?: number;
  /** The refused line of a line-protocol payload, from 1. */
  line?: number;
}

interface Window {
  /** The first refusal since the last message, and how many refusals it stands for. */
  first?: Feedback;
  count: number;
}

/**
 * An agent's feedback topic, bounded: the first refusal of a reason goes out at once; the ones after
 * it go out together at the next tick (every `intervalMs`), as one message that carries the first of
 * them and a `count` of all. So an agent that sends thousands of bad readings a second gets one message per
 * reason per interval, and the counts still add up to every refusal.
 */
export class FeedbackCoalescer {
  /** Open windows, by agent and reason; a window closes at the first tick with nothing to send. */
  private readonly windows = new Map<string, Window & { tenantId: string; agentId: string }>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    intervalMs: number,
    private readonly send: (tenantId: string, agentId: string, feedback: Feedback & { count: number }) => void,
  ) {
    this.timer = setInterval(() => this.tick(), intervalMs).unref();
  }

  report(tenantId: string, agentId: string, feedback: Feedback): void {
    const key = `${tenantId}/${agentId}/${feedback.reason}`;
    const window = this.windows.get(key);
    if (window) {
      window.first ??= feedback;
      window.count++;
      return;
    }
    this.windows.set(key, { tenantId, agentId, count: 0 });
    this.send(tenantId, agentId, { ...feedback, count: 1 });
  }

  private tick(): void {
    for (const [key, window] of this.windows) {
      if (!window.first) {
        this.windows.delete(key);
        continue;
      }
      this.send(window.tenantId, window.agentId, { ...window.first, count: window.count });
      window.first = undefined;
      window.count = 0;
    }
  }

  /** Sends what is still waiting, then stops. */
  close(): void {
    clearInterval(this.timer);
    this.tick();
  }
}
