import { describe, expect, it } from "vitest";
import { SubmissionBatcher } from "../../src/ingest/batcher.ts";
import type { MetricSubmission } from "../../src/ingest/submission.ts";

const point = (value: number) => ({ name: "m", value, ts: 0 });

function recorder() {
  const submitted: MetricSubmission[] = [];
  let fail: Error | undefined;
  return {
    submitted,
    failNext: (error: Error) => {
      fail = error;
    },
    submit: async (submission: MetricSubmission) => {
      if (fail) {
        const error = fail;
        fail = undefined;
        throw error;
      }
      submitted.push(submission);
    },
  };
}

describe("SubmissionBatcher", () => {
  it("coalesces one agent's readings into one submission per linger window", async () => {
    const queue = recorder();
    const batcher = new SubmissionBatcher(queue.submit, { maxBatch: 100, lingerMs: 5, maxPending: 1000 });
    await Promise.all([1, 2, 3].map((v) => batcher.add("t1", "a1", [point(v)], 1000 + v)));
    expect(queue.submitted).toHaveLength(1);
    expect(queue.submitted[0]).toMatchObject({ tenantId: "t1", agentId: "a1", source: "mqtt", receivedAt: 1001 });
    expect(queue.submitted[0]?.metrics.map((m) => m.value)).toEqual([1, 2, 3]);
    expect(batcher.pending).toBe(0);
  });

  it("keeps tenants in separate submissions and names the agent of each other reading", async () => {
    const queue = recorder();
    const batcher = new SubmissionBatcher(queue.submit, { maxBatch: 100, lingerMs: 5, maxPending: 1000 });
    await Promise.all([
      batcher.add("t1", "a1", [point(1)], 0),
      batcher.add("t2", "a1", [point(2)], 0),
      batcher.add("t1", "a2", [point(3)], 0),
    ]);
    const byTenant = Object.fromEntries(queue.submitted.map((s) => [s.tenantId, s]));
    expect(queue.submitted).toHaveLength(2);
    expect(byTenant.t1).toMatchObject({ agentId: "a1", metrics: [{ value: 1 }, { value: 3, agentId: "a2" }] });
    expect(byTenant.t1?.metrics[0]?.agentId).toBeUndefined();
    expect(byTenant.t2).toMatchObject({ agentId: "a1", metrics: [{ value: 2 }] });
  });

  it("flushes at maxBatch without waiting for the linger time", async () => {
    const queue = recorder();
    const batcher = new SubmissionBatcher(queue.submit, { maxBatch: 2, lingerMs: 60_000, maxPending: 1000 });
    await Promise.all([batcher.add("t", "a", [point(1)], 0), batcher.add("t", "a", [point(2)], 0)]);
    expect(queue.submitted).toHaveLength(1);
  });

  it("rejects every add of a batch that could not be submitted", async () => {
    const queue = recorder();
    const batcher = new SubmissionBatcher(queue.submit, { maxBatch: 100, lingerMs: 1, maxPending: 1000 });
    queue.failNext(new Error("redis down"));
    const results = await Promise.allSettled([
      batcher.add("t", "a", [point(1)], 0),
      batcher.add("t", "a", [point(2)], 0),
    ]);
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected"]);
    expect(batcher.pending).toBe(0);
    await batcher.add("t", "a", [point(3)], 0);
    expect(queue.submitted).toHaveLength(1);
  });

  it("holds new readings while maxPending are in flight", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const submitted: number[] = [];
    const batcher = new SubmissionBatcher(
      async (s) => {
        await gate;
        submitted.push(s.metrics.length);
      },
      { maxBatch: 2, lingerMs: 1, maxPending: 2 },
    );
    const first = batcher.add("t", "a", [point(1), point(2)], 0);
    let thirdDone = false;
    const third = batcher.add("t", "a", [point(3)], 0).then(() => (thirdDone = true));
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(batcher.pending).toBe(2);
    expect(thirdDone).toBe(false);
    release();
    await Promise.all([first, third]);
    expect(submitted).toEqual([2, 1]);
  });

  it("flushAll submits open batches at once and waits for them", async () => {
    const queue = recorder();
    const batcher = new SubmissionBatcher(queue.submit, { maxBatch: 100, lingerMs: 60_000, maxPending: 1000 });
    const added = batcher.add("t", "a", [point(1)], 0);
    await batcher.flushAll();
    await added;
    expect(queue.submitted).toHaveLength(1);
  });
});
