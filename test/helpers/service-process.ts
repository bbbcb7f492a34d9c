import { type ChildProcess, spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import path from "node:path";
import type { Mode } from "./app.ts";
import { CLI } from "./entry.ts";
import { createTestDatabase, deleteRedisPrefix, OWN_PORTS, REDIS_URL, tempDir, uniqueId } from "./services.ts";

export interface ServiceProcess {
  child: ChildProcess;
  httpUrl: string;
  mqttPort: number;
  adminToken: string;
  /** Resident memory of the process now, from /proc. */
  rssMiB(): Promise<number>;
  /** Whether the process is still running. */
  alive(): boolean;
  /** The last lines the process wrote to stderr (crash reports land there). */
  stderr(): string;
  /** The last lines the process logged (stdout). */
  stdout(): string;
  /** Stops the process (SIGKILL if it will not stop) and removes what it created. */
  cleanup(): Promise<void>;
}

/**
 * `edge-ingest serve` in a process of its own, on free ports and backends of the test's own, for
 * tests that must see the process survive (or die): an in-process app would take the test runner
 * down with it.
 */
export async function startServiceProcess(
  mode: Mode,
  env: Record<string, string> = {},
  options: { openFilesLimit?: number } = {},
): Promise<ServiceProcess> {
  const removals: (() => Promise<void>)[] = [];
  const adminToken = `admin-${uniqueId()}-${"z".repeat(32)}`;
  const backendEnv: Record<string, string> = {};
  if (mode === "embedded") {
    const data = await tempDir();
    removals.push(data.remove);
    backendEnv.DATA_DIR = data.dir;
  } else {
    const db = await createTestDatabase();
    const prefix = `edge-ingest-test-${uniqueId()}`;
    removals.push(db.drop, () => deleteRedisPrefix(prefix));
    Object.assign(backendEnv, { DATABASE_URL: db.url, REDIS_URL, REDIS_PREFIX: prefix, REDIS_PERSISTENCE: "none" });
  }
  const command = [process.execPath, ...CLI, "serve"];
  // prlimit runs the command in its own process (exec), so `child` is the service itself.
  const limited = options.openFilesLimit
    ? ["prlimit", `--nofile=${options.openFilesLimit}:${options.openFilesLimit}`, "--", ...command]
    : command;
  const child = spawn(limited[0] as string, limited.slice(1), {
    env: {
      ...process.env,
      ...OWN_PORTS,
      LOG_LEVEL: "info",
      ADMIN_TOKEN: adminToken,
      ...backendEnv,
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  let stdout = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout = (stdout + chunk).slice(-20_000);
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-20_000);
  });
  const cleanup = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(timer);
    }
    for (const remove of removals.reverse()) await remove();
  };
  try {
    const started = await new Promise<{ http: string; mqtt: { tcp: number } }>((resolve, reject) => {
      let buffered = "";
      child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
        buffered += chunk;
        for (const line of buffered.split("\n")) {
          if (line.includes('"edge-ingest started')) resolve(JSON.parse(line));
        }
        buffered = buffered.slice(buffered.lastIndexOf("\n") + 1);
      });
      child.once("exit", (code) => reject(new Error(`serve exited with ${code} before it started: ${stderr}`)));
    });
    return {
      child,
      httpUrl: started.http,
      mqttPort: started.mqtt.tcp,
      adminToken,
      rssMiB: async () => {
        const status = await readFile(path.join("/proc", String(child.pid), "status"), "utf8");
        return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) / 1024;
      },
      alive: () => child.exitCode === null && child.signalCode === null,
      stderr: () => stderr,
      stdout: () => stdout,
      cleanup,
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}
