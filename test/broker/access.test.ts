import { describe, expect, it } from "vitest";
import {
  agentOfClientId,
  decidePublish,
  type MqttPrincipal,
  mayReceive,
  maySubscribe,
  namespacedClientId,
} from "../../src/broker/access.ts";
import { feedbackTopic, SESSION_MARKER_TOPIC } from "../../src/broker/topics.ts";

const A = "11111111-1111-4111-8111-111111111111";
const B = "22222222-2222-4222-8222-222222222222";
const agent: MqttPrincipal = { kind: "agent", username: "ag_1", tenantId: A, agentId: "dev-1" };
const viewer: MqttPrincipal = { kind: "token", username: "tk_v", tenantId: A, role: "viewer" };
const ingest: MqttPrincipal = { kind: "token", username: "tk_i", tenantId: A, role: "ingest" };
const admin: MqttPrincipal = { kind: "admin" };
const anonymous: MqttPrincipal = { kind: "anonymous" };

const outcome = (principal: MqttPrincipal, topic: string) => {
  const decision = decidePublish(principal, topic);
  return decision.kind === "rejected" ? decision.reason : decision.kind;
};

describe("decidePublish", () => {
  it("lets an agent publish its own metrics", () => {
    expect(decidePublish(agent, `metrics/${A}/dev-1/cpu.load:1m`)).toEqual({
      kind: "metric",
      tenantId: A,
      agentId: "dev-1",
      name: "cpu.load:1m",
    });
  });

  it.each([
    [`metrics/${B}/dev-1/cpu`, "another tenant"],
    [`metrics/${A}/dev-2/cpu`, "another agent"],
    [`metrics/+/dev-1/cpu`, "a wildcard tenant"],
    ["metrics", "the root"],
    [`ingest/${A}/dev-1/errors`, "its own feedback topic"],
    ["$SYS/broker/x", "$SYS"],
    ["plain/topic", "a plain topic"],
    [`METRICS/${A}/dev-1/cpu`, "a differently cased root"],
  ])("refuses an agent %s (%s) as forbidden", (topic) => {
    expect(outcome(agent, topic)).toBe("forbidden");
  });

  it.each([
    [`metrics/${A}/dev-1`],
    [`metrics/${A}/dev-1/`],
    [`metrics/${A}/dev-1/cpu/extra`],
    [`metrics/${A}/dev-1/bad name`],
    [`metrics/${A}/dev-1/${"x".repeat(129)}`],
  ])("refuses the malformed %s under the agent's own prefix as bad_topic", (topic) => {
    expect(outcome(agent, topic)).toBe("bad_topic");
  });

  it("lets no viewer or ingest token publish", () => {
    for (const principal of [viewer, ingest]) {
      expect(outcome(principal, `metrics/${A}/dev-1/cpu`)).toBe("forbidden");
      expect(outcome(principal, "plain/topic")).toBe("forbidden");
    }
  });

  it("routes anonymous and admin traffic outside the tenant namespace like a plain broker", () => {
    for (const principal of [anonymous, admin]) {
      expect(outcome(principal, "plain/topic")).toBe("plain");
      expect(outcome(principal, `metrics/${A}/dev-1/cpu`)).toBe("forbidden");
      expect(outcome(principal, `ingest/${A}/dev-1/errors`)).toBe("forbidden");
      expect(outcome(principal, "$SYS/x")).toBe("forbidden");
    }
  });
});

describe("maySubscribe", () => {
  it("lets an agent subscribe to its own feedback topic only", () => {
    expect(maySubscribe(agent, feedbackTopic(A, "dev-1"))).toBe(true);
    for (const filter of [
      feedbackTopic(A, "dev-2"),
      feedbackTopic(B, "dev-1"),
      `ingest/${A}/+/errors`,
      `ingest/${A}/#`,
      `metrics/${A}/#`,
      "#",
      "+/+/+/+",
      "$SYS/#",
    ]) {
      expect(maySubscribe(agent, filter), filter).toBe(false);
    }
  });

  it("lets a viewer subscribe under its own tenant's metrics only", () => {
    for (const filter of [`metrics/${A}/#`, `metrics/${A}/+/cpu`, `metrics/${A}/dev-1/cpu`]) {
      expect(maySubscribe(viewer, filter), filter).toBe(true);
    }
    for (const filter of [
      `metrics/${B}/#`,
      "metrics/+/#",
      "metrics/#",
      `metrics/${A}`,
      "#",
      "+/#",
      `ingest/${A}/dev-1/errors`,
      "$SYS/#",
    ]) {
      expect(maySubscribe(viewer, filter), filter).toBe(false);
    }
    expect(maySubscribe(ingest, `metrics/${A}/#`)).toBe(false);
  });

  it("grants anonymous clients any filter, and keeps every tenant topic and $SYS from reaching them", () => {
    for (const filter of ["plain/#", "#", "+/+", "+/x", "metrics/#", `metrics/${A}/#`, "ingest/#", "$SYS/#"]) {
      expect(maySubscribe(anonymous, filter), filter).toBe(true);
    }
    expect(mayReceive(anonymous, "plain/x")).toBe(true);
    for (const topic of [`metrics/${A}/dev-1/rpm`, feedbackTopic(A, "dev-1"), "$SYS/broker/uptime"]) {
      expect(mayReceive(anonymous, topic), topic).toBe(false);
    }
  });

  it("grants every principal the session marker, on which nothing is delivered", () => {
    for (const principal of [agent, viewer, admin, anonymous]) {
      expect(maySubscribe(principal, SESSION_MARKER_TOPIC)).toBe(true);
    }
  });

  it("lets the admin read $SYS", () => {
    expect(maySubscribe(admin, "$SYS/#")).toBe(true);
  });
});

describe("mayReceive", () => {
  it("hands each principal only topics it may read", () => {
    expect(mayReceive(viewer, `metrics/${A}/dev-1/cpu`)).toBe(true);
    expect(mayReceive(viewer, `metrics/${B}/dev-1/cpu`)).toBe(false);
    expect(mayReceive(agent, feedbackTopic(A, "dev-1"))).toBe(true);
    expect(mayReceive(agent, feedbackTopic(A, "dev-2"))).toBe(false);
    expect(mayReceive(agent, `metrics/${A}/dev-1/cpu`)).toBe(false);
    expect(mayReceive(anonymous, "plain/x")).toBe(true);
    expect(mayReceive(anonymous, `metrics/${A}/dev-1/cpu`)).toBe(false);
    expect(mayReceive(admin, "$SYS/x")).toBe(true);
  });
});

describe("client id namespaces", () => {
  it("gives the same client id of two principals two different sessions", () => {
    const other: MqttPrincipal = { ...agent, tenantId: B } as MqttPrincipal;
    expect(namespacedClientId(agent, "sensor")).not.toBe(namespacedClientId(other, "sensor"));
    expect(namespacedClientId(anonymous, "sensor")).toBe("anon/sensor");
    expect(namespacedClientId(viewer, "dash")).toBe("v/tk_v/dash");
  });

  it("recovers the agent of a namespaced id, and of nothing else", () => {
    expect(agentOfClientId(namespacedClientId(agent, "x/y"))).toEqual({ tenantId: A, agentId: "dev-1" });
    expect(agentOfClientId(namespacedClientId(anonymous, `a/${A}/dev-1/x`))).toBeUndefined();
    expect(agentOfClientId(namespacedClientId(viewer, `a/${A}/dev-1/x`))).toBeUndefined();
  });
});
