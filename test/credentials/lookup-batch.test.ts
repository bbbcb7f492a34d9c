import { describe, expect, it } from "vitest";
import { LookupBatch } from "../../src/credentials/lookup-batch.ts";

describe("lookup batch", () => {
  it("loads the keys asked for in one turn with one call, each caller getting its own (null if not found)", async () => {
    const calls: string[][] = [];
    const batch = new LookupBatch<number>(async (keys) => {
      calls.push(keys);
      return new Map(keys.filter((key) => key !== "missing").map((key) => [key, key.length]));
    });
    const answers = await Promise.all(["a", "bb", "a", "missing", "ccc"].map((key) => batch.load(key)));
    expect(answers).toEqual([1, 2, 1, null, 3]);
    expect(calls).toEqual([["a", "bb", "missing", "ccc"]]);
    expect(await batch.load("dddd")).toBe(4);
    expect(calls).toHaveLength(2);
  });

  it("splits a large turn into calls of at most maxKeys, and fails the callers of a call that fails", async () => {
    const calls: string[][] = [];
    const batch = new LookupBatch<string>(async (keys) => {
      calls.push(keys);
      if (keys.includes("k3")) throw new Error("database unavailable");
      return new Map(keys.map((key) => [key, key]));
    }, 2);
    const answers = await Promise.allSettled(["k0", "k1", "k2", "k3", "k4"].map((key) => batch.load(key)));
    expect(calls).toEqual([["k0", "k1"], ["k2", "k3"], ["k4"]]);
    expect(answers.map((a) => a.status)).toEqual(["fulfilled", "fulfilled", "rejected", "rejected", "fulfilled"]);
  });
});
