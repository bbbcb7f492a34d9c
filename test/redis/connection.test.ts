import { describe, expect, it } from "vitest";
import { parseSentinels, sharedRedisOptions } from "../../src/redis/connection.ts";

describe("parseSentinels", () => {
  it("reads host:port lists, IPv6 in brackets", () => {
    expect(parseSentinels("a:26379,b.example:26380")).toEqual([
      { host: "a", port: 26379 },
      { host: "b.example", port: 26380 },
    ]);
    expect(parseSentinels("[fd00::1]:26379")).toEqual([{ host: "fd00::1", port: 26379 }]);
  });

  it.each(["", "a", "a:", "a:0", "a:70000", "a:1,,b:2", "a b:1"])("refuses %j", (list) => {
    expect(parseSentinels(list)).toBeUndefined();
  });
});

describe("sharedRedisOptions", () => {
  const readonly = new Error("READONLY You can't write against a read only replica.");

  it("names the connection and reconnects when a demoted primary answers READONLY", () => {
    const options = sharedRedisOptions({ url: "redis://cache:6379" }, "queue");
    expect(options.connectionName).toBe("edge-ingest:queue");
    expect(options.sentinels).toBeUndefined();
    expect(options.reconnectOnError?.(readonly)).toBe(2);
    expect(options.reconnectOnError?.(new Error("ERR wrong number of arguments"))).toBe(false);
  });

  it("asks the sentinels for the primary and follows their announcements, TLS as asked", () => {
    const options = sharedRedisOptions(
      {
        url: "rediss://:secret@ignored/0",
        sentinels: [{ host: "s1", port: 26379 }],
        sentinelName: "edge-ingest",
        sentinelPassword: "sentinel-secret",
        sentinelTls: true,
      },
      "worker",
    );
    expect(options).toMatchObject({
      connectionName: "edge-ingest:worker",
      sentinels: [{ host: "s1", port: 26379 }],
      name: "edge-ingest",
      sentinelPassword: "sentinel-secret",
      sentinelTLS: {},
      enableTLSForSentinelMode: true,
      failoverDetector: true,
    });
    expect(options.reconnectOnError?.(readonly)).toBe(2);
    const plain = sharedRedisOptions({ url: "redis://x", sentinels: [{ host: "s1", port: 1 }] }, "queue");
    expect([plain.enableTLSForSentinelMode, plain.sentinelTLS]).toEqual([false, undefined]);
  });
});
