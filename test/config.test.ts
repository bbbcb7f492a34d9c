import path from "node:path";
import { describe, expect, it } from "vitest";
import { CONFIG_VARIABLES, ConfigError, loadConfig } from "../src/config.ts";
import { LIMITS } from "../src/limits/tenant-limits.ts";

const distributed = {
  DATABASE_URL: "postgresql://localhost/x",
  REDIS_URL: "redis://localhost:6379",
  ADMIN_TOKEN: "a".repeat(32),
};

describe("loadConfig", () => {
  it("runs embedded with safe defaults when nothing is set", () => {
    const config = loadConfig({});
    expect(config.mode).toBe("embedded");
    expect(config.HTTP_PORT).toBe(3000);
    expect(config.DATA_DIR).toBe(path.resolve("./data"));
    expect([...config.ROLES]).toEqual(["api", "worker", "broker"]);
    expect(config.payloadLimits).toEqual({
      maxBatchItems: 1000,
      maxTags: 32,
      maxTagLength: 256,
      maxDedupeIdLength: 128,
      maxFutureSkewMs: 86_400_000,
      maxLineFields: 200,
      maxAgeMs: 30 * 86_400_000,
    });
  });

  it("runs distributed when DATABASE_URL and REDIS_URL are both set", () => {
    const { ADMIN_TOKEN: _, ...withoutAdminToken } = distributed;
    const config = loadConfig({ ...withoutAdminToken, ROLES: "worker" });
    expect(config.mode).toBe("distributed");
    expect([...config.ROLES]).toEqual(["worker"]);
  });

  it("reads the sentinels of a replicated Redis", () => {
    const config = loadConfig({ ...distributed, REDIS_SENTINELS: "s1:26379, [::1]:26380", REDIS_MIN_REPLICAS: "1" });
    expect(config.REDIS_SENTINELS).toEqual([
      { host: "s1", port: 26379 },
      { host: "::1", port: 26380 },
    ]);
    expect([config.REDIS_SENTINEL_NAME, config.REDIS_MIN_REPLICAS, config.REDIS_REPLICA_TIMEOUT_MS]).toEqual([
      "edge-ingest",
      1,
      1000,
    ]);
  });

  it.each([
    [{ HTTP_PORT: "abc" }, /HTTP_PORT: must be a whole number \(got "abc"\)/],
    [{ HTTP_PORT: "70000" }, /HTTP_PORT: must be at most 65535/],
    [{ LOG_LEVEL: "loud" }, /LOG_LEVEL/],
    [{ ROLES: "api,cook" }, /ROLES: must be a comma-separated list/],
    [{ MAX_BATCH_ITEMS: "0" }, /MAX_BATCH_ITEMS: must be at least 1/],
    [{ DATABASE_URL: "mysql://x", REDIS_URL: "redis://x" }, /DATABASE_URL: must be a URL/],
    [{ REDIS_PREFIX: "has space" }, /REDIS_PREFIX/],
    [{ MIGRATE_ON_START: "yes" }, /MIGRATE_ON_START: must be "true" or "false"/],
    [{ DATABASE_URL: "postgresql://x/y" }, /REDIS_URL: distributed mode needs both/],
    [{ REDIS_URL: "redis://x" }, /DATABASE_URL: distributed mode needs both/],
    [{ DATABASE_URL: "postgresql://x/y", REDIS_URL: "redis://x" }, /ADMIN_TOKEN: required in distributed mode/],
    [{ ...distributed, ADMIN_TOKEN: "short" }, /ADMIN_TOKEN: must be at least 32 characters/],
    [{ ROLES: "api" }, /ROLES: embedded mode runs every role in one process/],
    [{ ...distributed, REDIS_SENTINELS: "a:26379,b" }, /REDIS_SENTINELS: must be a comma-separated list of host:port/],
    [{ REDIS_SENTINELS: "a:26379" }, /REDIS_URL: REDIS_SENTINELS needs REDIS_URL too/],
    [
      { ...distributed, REDIS_MIN_REPLICAS: "1", REDIS_REPLICA_TIMEOUT_MS: "5000" },
      /REDIS_REPLICA_TIMEOUT_MS: must be below/,
    ],
    [{ MQTT_TLS_CLIENT_AUTH: "required" }, /MQTT_TLS_CLIENT_AUTH: client certificates need the TLS listeners/],
    [{ MQTT_TLS_CLIENT_AUTH: "sometimes" }, /MQTT_TLS_CLIENT_AUTH: /],
  ])("names the bad variable in %j", (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });

  it("takes every tenant limit's default from its variable", () => {
    for (const { env } of LIMITS) expect(CONFIG_VARIABLES).toContain(env);
    const config = loadConfig({ AGENT_MAX_READINGS_PER_SECOND: "7", TENANT_MAX_CONNECTIONS: "9" });
    expect(config.tenantLimits).toMatchObject({
      agentReadingsPerSecond: 7,
      maxConnections: 9,
      agentReadingsBurst: 5000,
    });
  });

  it("refuses an outgoing bound smaller than the largest packet, naming it", () => {
    expect(() => loadConfig({ MQTT_MAX_OUTGOING_BYTES: "2048", MQTT_MAX_PACKET_BYTES: "4096" })).toThrow(
      /MQTT_MAX_OUTGOING_BYTES: must be at least MQTT_MAX_PACKET_BYTES/,
    );
  });

  it("names every bad variable at once", () => {
    expect(() => loadConfig({ HTTP_PORT: "x", SSE_HEARTBEAT_MS: "1" })).toThrow(/HTTP_PORT[\s\S]*SSE_HEARTBEAT_MS/);
  });

  it("treats an empty variable as unset", () => {
    expect(loadConfig({ DATABASE_URL: "", REDIS_URL: "" }).mode).toBe("embedded");
  });
});
