import { describe, expect, it } from "vitest";
import { ingestTarget, readScope, requireAdmin } from "../../src/api/access.ts";
import type { Principal } from "../../src/credentials/store.ts";

const agent: Principal = { kind: "agent", username: "ag_1", tenantId: "t1", agentId: "dev-1" };
const ingest: Principal = { kind: "token", username: "tk_1", tenantId: "t1", role: "ingest" };
const viewer: Principal = { kind: "token", username: "tk_2", tenantId: "t1", role: "viewer" };
const admin: Principal = { kind: "admin" };

const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return "allowed";
  } catch (error) {
    return (error as { code: string }).code;
  }
};

describe("ingestTarget", () => {
  it("lets an agent write as itself only", () => {
    expect(ingestTarget(agent, undefined)).toEqual({ tenantId: "t1", agentId: "dev-1" });
    expect(ingestTarget(agent, "dev-1")).toEqual({ tenantId: "t1", agentId: "dev-1" });
    expect(codeOf(() => ingestTarget(agent, "dev-2"))).toBe("forbidden");
  });

  it("lets an ingest token write for a named agent of its tenant", () => {
    expect(ingestTarget(ingest, "gw-1")).toEqual({ tenantId: "t1", agentId: "gw-1" });
    expect(codeOf(() => ingestTarget(ingest, undefined))).toBe("bad_agent_id");
    expect(codeOf(() => ingestTarget(ingest, "bad id"))).toBe("bad_agent_id");
    expect(codeOf(() => ingestTarget(ingest, "x".repeat(65)))).toBe("bad_agent_id");
  });

  it("lets neither viewers nor the admin write metrics", () => {
    expect(codeOf(() => ingestTarget(viewer, "gw-1"))).toBe("forbidden");
    expect(codeOf(() => ingestTarget(admin, "gw-1"))).toBe("forbidden");
  });
});

describe("readScope", () => {
  it("keeps every read inside the principal's tenant", () => {
    expect(readScope(viewer, undefined)).toEqual({ tenantId: "t1" });
    expect(readScope(ingest, "dev-9")).toEqual({ tenantId: "t1", agentId: "dev-9" });
    expect(readScope(agent, undefined)).toEqual({ tenantId: "t1", agentId: "dev-1" });
    expect(codeOf(() => readScope(agent, "dev-2"))).toBe("forbidden");
    expect(codeOf(() => readScope(admin, undefined))).toBe("forbidden");
  });
});

describe("requireAdmin", () => {
  it("admits only the admin", () => {
    expect(codeOf(() => requireAdmin(admin))).toBe("allowed");
    for (const p of [agent, ingest, viewer]) expect(codeOf(() => requireAdmin(p))).toBe("forbidden");
  });
});
