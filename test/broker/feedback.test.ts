import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { type Feedback, FeedbackCoalescer } from "../../src/broker/feedback.ts";

const T = "11111111-1111-4111-8111-111111111111";
const bad = (n: number): Feedback => ({ topic: `metrics/${T}/dev/x`, reason: "bad_json", message: `bad ${n}` });

describe("FeedbackCoalescer", () => {
  let sent: { agentId: string; feedback: Feedback & { count: number } }[];
  let coalescer: FeedbackCoalescer;
  beforeEach(() => {
    vi.useFakeTimers();
    sent = [];
    coalescer = new FeedbackCoalescer(1000, (_tenantId, agentId, feedback) => sent.push({ agentId, feedback }));
  });
  afterEach(() => {
    coalescer.close();
    vi.useRealTimers();
  });

  it("sends the first refusal at once, then one message per interval that counts the rest", () => {
    coalescer.report(T, "dev", bad(1));
    expect(sent.map((s) => s.feedback)).toEqual([{ ...bad(1), count: 1 }]);
    for (let n = 2; n <= 5000; n++) coalescer.report(T, "dev", bad(n));
    expect(sent).toHaveLength(1);
    vi.advanceTimersByTime(1000);
    expect(sent.map((s) => s.feedback)).toEqual([
      { ...bad(1), count: 1 },
      { ...bad(2), count: 4999 },
    ]);
  });

  it("keeps reasons and agents apart", () => {
    coalescer.report(T, "dev", bad(1));
    coalescer.report(T, "dev", { ...bad(2), reason: "bad_value" });
    coalescer.report(T, "other", bad(3));
    expect(sent.map((s) => [s.agentId, s.feedback.reason, s.feedback.count])).toEqual([
      ["dev", "bad_json", 1],
      ["dev", "bad_value", 1],
      ["other", "bad_json", 1],
    ]);
  });

  it("sends at once again after a quiet interval, and forgets quiet agents", () => {
    coalescer.report(T, "dev", bad(1));
    vi.advanceTimersByTime(2000);
    coalescer.report(T, "dev", bad(2));
    expect(sent.map((s) => s.feedback.message)).toEqual(["bad 1", "bad 2"]);
  });

  it("sends what waits when it is closed", () => {
    coalescer.report(T, "dev", bad(1));
    coalescer.report(T, "dev", bad(2));
    coalescer.close();
    expect(sent.map((s) => s.feedback.count)).toEqual([1, 1]);
  });
});
