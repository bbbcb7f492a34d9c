import { describe, expect, it } from "vitest";
import type { MetricSubmission } from "../../src/ingest/submission.ts";
import { GroupCommit } from "../../src/worker/group-commit.ts";

const submission = (tenantId: string, id: string, readings = 1): MetricSubmission => ({
  id,
  tenantId,
  agentId: "a",
  source: "mqtt",
  receivedAt: 0,
  metrics: Array.from({ length: readings }, () => ({ name: "m", value: 1, ts: 0 })),
});

/** A writer whose statements finish when the test says; it records what each one held. */
function writer(fail: (group: MetricSubmission[]) => Error | undefined = () => undefined) {
  const statements: { ids: string[]; finish(): void }[] = [];
  const write = (group: MetricSubmission[]) =>
    new Promise<void>((resolve, reject) => {
      const error = fail(group);
      statements.push({ ids: group.map((s) => s.id), finish: () => (error ? reject(error) : resolve()) });
    });
  return { statements, write };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("group commit", () => {
  it("writes a lone submission at once, and stores what waits meanwhile together in the next statement, tenants mixed", async () => {
    const { statements, write } = writer();
    const commits = new GroupCommit(write, { maxInFlight: 2, maxReadings: 100, isolate: () => true });
    const done: string[] = [];
    const add = (s: MetricSubmission) => commits.add(s).then(() => done.push(s.id));
    add(submission("t1", "a"));
    add(submission("t1", "b"));
    add(submission("t1", "c"));
    add(submission("t2", "x"));
    add(submission("t1", "d"));
    expect(statements.map((s) => s.ids)).toEqual([["a"], ["b"]]);
    statements[0]?.finish();
    await tick();
    expect(statements.map((s) => s.ids)).toEqual([["a"], ["b"], ["c", "x", "d"]]);
    expect(done).toEqual(["a"]);
    statements[1]?.finish();
    statements[2]?.finish();
    await tick();
    expect(done.sort()).toEqual(["a", "b", "c", "d", "x"]);
    expect(statements).toHaveLength(3);
  });

  it("takes at most maxReadings readings a statement, never splitting a submission", async () => {
    const { statements, write } = writer();
    const commits = new GroupCommit(write, { maxInFlight: 1, maxReadings: 10, isolate: () => true });
    for (const [id, readings] of [
      ["first", 1],
      ["a", 4],
      ["b", 5],
      ["c", 2],
      ["big", 30],
    ] as const) {
      void commits.add(submission("t", id, readings));
    }
    statements[0]?.finish();
    await tick();
    statements[1]?.finish();
    await tick();
    statements[2]?.finish();
    await tick();
    expect(statements.map((s) => s.ids)).toEqual([["first"], ["a", "b"], ["c"], ["big"]]);
  });

  it("writes a failed group again one at a time, so only the bad submission fails", async () => {
    const bad = new Error("metrics_name_check");
    const { statements, write } = writer((group) => (group.some((s) => s.id === "bad") ? bad : undefined));
    const commits = new GroupCommit(write, { maxInFlight: 1, maxReadings: 100, isolate: () => true });
    const outcomes: Record<string, string> = {};
    for (const id of ["first", "ok-1", "bad", "ok-2"]) {
      commits.add(submission("t", id)).then(
        () => (outcomes[id] = "stored"),
        (error: Error) => (outcomes[id] = error.message),
      );
    }
    for (let i = 0; i < 5; i++) {
      for (const statement of statements) statement.finish();
      await tick();
    }
    expect(statements.map((s) => s.ids)).toEqual([["first"], ["ok-1", "bad", "ok-2"], ["ok-1"], ["bad"], ["ok-2"]]);
    expect(outcomes).toEqual({ first: "stored", "ok-1": "stored", bad: "metrics_name_check", "ok-2": "stored" });
  });

  it("fails the whole group at once when the database is away (each job then waits for it)", async () => {
    const away = new Error("Connection terminated");
    const { statements, write } = writer((group) => (group.length > 1 ? away : undefined));
    const commits = new GroupCommit(write, { maxInFlight: 1, maxReadings: 100, isolate: (e) => e !== away });
    const failed: string[] = [];
    void commits.add(submission("t", "first"));
    for (const id of ["a", "b"]) commits.add(submission("t", id)).catch(() => failed.push(id));
    statements[0]?.finish();
    await tick();
    statements[1]?.finish();
    await tick();
    expect(statements.map((s) => s.ids)).toEqual([["first"], ["a", "b"]]);
    expect(failed).toEqual(["a", "b"]);
  });
});
