import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MIGRATIONS_DIR } from "../src/store/migrate.ts";
import { hasOpenssl, selfSigned } from "./helpers/certificates.ts";
import { CLI } from "./helpers/entry.ts";
import { basic, request } from "./helpers/http.ts";
import { freePort } from "./helpers/redis-server.ts";
import { tempDir } from "./helpers/services.ts";

const run = promisify(execFile);
const openssl = await hasOpenssl();

async function cli(args: string[], env: Record<string, string>) {
  try {
    const { stdout, stderr } = await run(process.execPath, [...CLI, ...args], { env: { ...process.env, ...env } });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

/** Starts `edge-ingest serve` as its own process and resolves once it logs that it started. */
function serve(env: Record<string, string>): Promise<{ child: ChildProcess; logs: string[] }> {
  const child = spawn(process.execPath, [...CLI, "serve"], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: string[] = [];
  return new Promise((resolve, reject) => {
    child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      logs.push(...chunk.split("\n").filter(Boolean));
      if (chunk.includes("edge-ingest started")) resolve({ child, logs });
    });
    child.once("exit", (code) => reject(new Error(`serve exited with ${code}: ${logs.join("\n")}`)));
  });
}

describe("edge-ingest CLI against a running embedded server", () => {
  let env: Record<string, string>;
  let server: { child: ChildProcess; logs: string[] };
  let removeDir: () => Promise<void>;

  beforeAll(async () => {
    const data = await tempDir();
    removeDir = data.remove;
    env = {
      DATA_DIR: data.dir,
      HTTP_PORT: String(await freePort()),
      HTTP_HOST: "127.0.0.1",
      MQTT_HOST: "127.0.0.1",
      MQTT_PORT: "0",
      MQTT_WS_PORT: "0",
      LOG_LEVEL: "info",
    };
    server = await serve(env);
  });
  afterAll(async () => {
    if (server?.child.exitCode === null) server.child.kill("SIGKILL");
    await removeDir?.();
  });

  it("overrides a tenant's limits, which the service applies at once, and puts one back to its default", async () => {
    const { id: tenantId } = JSON.parse((await cli(["tenant", "create", "--name", "limited"], env)).stdout);
    const credential = JSON.parse(
      (await cli(["agent", "create", "--tenant", tenantId, "--agent", "slow"], env)).stdout,
    );
    const set = await cli(
      [
        "tenant",
        "limits",
        "set",
        "--tenant",
        tenantId,
        "--agent-readings-per-second",
        "2",
        "--agent-readings-burst",
        "3",
      ],
      env,
    );
    expect(set.code).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({
      tenant_id: tenantId,
      limits: { agent_readings_per_second: 2, agent_readings_burst: 3, tenant_readings_per_second: 20000 },
      overrides: { agent_readings_per_second: 2, agent_readings_burst: 3, max_connections: null },
      defaults: { agent_readings_per_second: 1000 },
    });

    // Past the new burst, an HTTP ingestion is refused whole, with when to come back.
    const url = `http://127.0.0.1:${env.HTTP_PORT}/api/v1/metrics`;
    const auth = basic(credential.username, credential.password);
    const readings = (count: number) => ({
      metrics: Array.from({ length: count }, (_, value) => ({ name: "rpm", value })),
    });
    expect((await request(url, { auth, body: readings(3) })).status).toBe(202);
    const refused = await request(url, { auth, body: readings(1) });
    expect(refused.status).toBe(429);
    expect(refused.body.error.code).toBe("rate_limited");
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    await new Promise((resolve) => setTimeout(resolve, retryAfter * 1000));
    expect((await request(url, { auth, body: readings(1) })).status).toBe(202);

    const back = await cli(["tenant", "limits", "set", "--tenant", tenantId, "--agent-readings-burst", "default"], env);
    expect(JSON.parse(back.stdout).limits.agent_readings_burst).toBe(5000);
    const shown = JSON.parse((await cli(["tenant", "limits", "show", "--tenant", tenantId], env)).stdout);
    expect(shown.overrides).toMatchObject({ agent_readings_per_second: 2, agent_readings_burst: null });

    const bad = await cli(["tenant", "limits", "set", "--tenant", tenantId, "--max-connections", "lots"], env);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--max-connections must be a positive whole number or "default"/);
  });

  it("shows the failed set, which embedded mode never fills, and says how to ask for a retry", async () => {
    const failed = await cli(["jobs", "failed"], env);
    expect(failed.code).toBe(0);
    expect(JSON.parse(failed.stdout)).toEqual({ count: 0, oldest_failed_at: null, reasons: [], jobs: [] });
    const retried = await cli(["jobs", "retry", "--all"], env);
    expect(JSON.parse(retried.stdout)).toEqual({ retried: 0 });
    const neither = await cli(["jobs", "retry"], env);
    expect(neither.code).toBe(1);
    expect(neither.stderr).toMatch(/jobs retry takes --all or job ids/);
  });

  it("creates a tenant, an agent and tokens, and revokes a credential", async () => {
    const tenant = await cli(["tenant", "create", "--name", "acme"], env);
    expect(tenant.code).toBe(0);
    const { id: tenantId } = JSON.parse(tenant.stdout);

    const agent = await cli(["agent", "create", "--tenant", tenantId, "--agent", "pump-1"], env);
    expect(agent.code).toBe(0);
    const credential = JSON.parse(agent.stdout);
    expect(credential).toMatchObject({
      tenant_id: tenantId,
      agent_id: "pump-1",
      username: expect.stringMatching(/^ag_/),
    });

    const token = await cli(["token", "create", "--tenant", tenantId, "--role", "viewer"], env);
    expect(JSON.parse(token.stdout)).toMatchObject({ role: "viewer", token: expect.stringMatching(/^tk_.+\..+/) });

    const url = `http://127.0.0.1:${env.HTTP_PORT}/api/v1/metrics`;
    const auth = basic(credential.username, credential.password);
    expect((await request(url, { auth, body: { metrics: [{ name: "rpm", value: 900 }] } })).status).toBe(202);

    const revoke = await cli(["credential", "revoke", credential.username], env);
    expect(revoke.code).toBe(0);
    expect((await request(url, { auth, body: { metrics: [{ name: "rpm", value: 901 }] } })).status).toBe(401);
  });

  it.skipIf(!openssl)("pins an agent's certificate and manages a tenant's CAs", async () => {
    const { id: tenantId } = JSON.parse((await cli(["tenant", "create", "--name", "fleet"], env)).stdout);
    const { dir, remove } = await tempDir();
    try {
      const device = await selfSigned(dir, "device", "device-1");
      const pinned = await cli(
        ["agent", "create", "--tenant", tenantId, "--agent", "device-1", "--certificate", device.certFile],
        env,
      );
      expect(JSON.parse(pinned.stdout)).toEqual({
        tenant_id: tenantId,
        agent_id: "device-1",
        username: expect.stringMatching(/^ct_/),
      });
      const ca = await selfSigned(dir, "ca", "Fleet CA", { ca: true });
      const added = JSON.parse(
        (await cli(["tenant", "ca", "add", "--tenant", tenantId, "--pem", ca.certFile, "--register-agents"], env))
          .stdout,
      );
      expect(added).toMatchObject({ subject: "CN=Fleet CA", register_agents: true });
      const listed = JSON.parse((await cli(["tenant", "ca", "list", "--tenant", tenantId], env)).stdout);
      expect(listed.map((row: { fingerprint: string }) => row.fingerprint)).toEqual([added.fingerprint]);
      const notCa = await cli(["tenant", "ca", "add", "--tenant", tenantId, "--pem", device.certFile], env);
      expect(notCa.code).toBe(1);
      expect(notCa.stderr).toMatch(/not a CA/);
      const removed = await cli(
        ["tenant", "ca", "remove", "--tenant", tenantId, "--fingerprint", added.fingerprint],
        env,
      );
      expect(JSON.parse(removed.stdout)).toEqual({ removed: added.fingerprint });
      expect(JSON.parse((await cli(["tenant", "ca", "list", "--tenant", tenantId], env)).stdout)).toEqual([]);
    } finally {
      await remove();
    }
  });

  it("explains a refused admin command and a missing flag", async () => {
    const missing = await cli(["agent", "create", "--agent", "x"], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/missing --tenant/);
    const wrongToken = await cli(["tenant", "create", "--name", "x", "--token", "not-the-token"], env);
    expect(wrongToken.code).toBe(1);
    expect(wrongToken.stderr).toMatch(/401 unauthorized/);
  });

  it("stops on SIGTERM with exit code 0 after finishing its work", async () => {
    const exited = new Promise<number | null>((resolve) => server.child.once("exit", resolve));
    server.child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(server.logs.some((line) => line.includes('"msg":"stopped"'))).toBe(true);
  });
});

describe("edge-ingest CLI on its own", () => {
  it("refuses a bad variable at start-up, naming it", async () => {
    const result = await cli(["serve"], { HTTP_PORT: "eighty" });
    expect(result.code).toBe(78);
    expect(result.stderr).toMatch(/HTTP_PORT: must be a whole number \(got "eighty"\)/);
  });

  it("migrates an embedded data directory", async () => {
    const data = await tempDir();
    try {
      const first = await cli(["migrate"], { DATA_DIR: data.dir, LOG_LEVEL: "silent" });
      const all = (await readdir(MIGRATIONS_DIR, { withFileTypes: true }))
        .filter((entry) => entry.isDirectory())
        .map((entry) => entry.name)
        .sort();
      expect(JSON.parse(first.stdout)).toEqual({ applied: all });
      const second = await cli(["migrate"], { DATA_DIR: data.dir, LOG_LEVEL: "silent" });
      expect(JSON.parse(second.stdout)).toEqual({ applied: [] });
    } finally {
      await data.remove();
    }
  });

  /** Runs `edge-ingest <command>` with a DATA_DIR that cannot be made (a path under a file). */
  async function withUncreatableDataDir(command: string, env: Record<string, string>) {
    const data = await tempDir();
    try {
      const notADirectory = path.join(data.dir, "file");
      await writeFile(notADirectory, "");
      return await cli([command], { DATA_DIR: path.join(notADirectory, "data"), ...env });
    } finally {
      await data.remove();
    }
  }

  it("says why migrate failed, in one line", async () => {
    const result = await withUncreatableDataDir("migrate", { LOG_LEVEL: "silent" });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^edge-ingest: migrate failed: ENOTDIR: not a directory, mkdir .*\n$/);
  });

  it("ends a first start whose embedded database cannot be created, saying why", async () => {
    const result = await withUncreatableDataDir("serve", { LOG_FORMAT: "json" });
    expect(result.code).toBe(1);
    // The child's own reason, then the service's.
    expect(result.stderr).toMatch(/^edge-ingest: migrate failed: ENOTDIR: not a directory, mkdir /);
    const logged = result.stdout
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line) as { level: number; msg: string });
    expect(logged).toEqual([
      expect.objectContaining({
        level: 60,
        msg: "edge-ingest could not start:\n  creating the embedded database in DATA_DIR failed (migrate exited with 1)",
      }),
    ]);
  });

  // Two embedded databases created from scratch, each about 8 s on this machine when it is idle.
  it("logs JSON lines unless LOG_FORMAT=pretty asks for lines a person reads", { timeout: 90_000 }, async () => {
    for (const [format, check] of [
      ["json", (line: string) => expect(JSON.parse(line)).toMatchObject({ level: 30, msg: "applied migration" })],
      ["pretty", (line: string) => expect(line).toMatch(/INFO.*applied migration/)],
    ] as const) {
      const data = await tempDir();
      try {
        const result = await cli(["migrate"], { DATA_DIR: data.dir, LOG_LEVEL: "info", LOG_FORMAT: format });
        const line = result.stdout.split("\n").find((l) => l.includes("applied migration")) ?? "";
        check(line);
        if (format === "pretty") expect(line).not.toMatch(/^\{/);
      } finally {
        await data.remove();
      }
    }
    expect((await cli(["migrate"], { LOG_FORMAT: "xml" })).stderr).toMatch(/LOG_FORMAT: must be "json" or "pretty"/);
  });

  it("says when no server answers", async () => {
    const result = await cli(["tenant", "create", "--name", "x", "--token", "t"], {
      HTTP_PORT: String(await freePort()),
    });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/cannot reach .* is the server running\?/);
  });

  it("prints usage for an unknown command", async () => {
    const result = await cli(["frobnicate", "now"], {});
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/unknown command: frobnicate now[\s\S]*usage: edge-ingest/);
  });
});
