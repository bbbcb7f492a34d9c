import { execFile } from "node:child_process";
import { chown, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { freePort } from "./redis-server.ts";

const run = promisify(execFile);

/** The directory of PostgreSQL's server programs (Debian puts them under /usr/lib/postgresql/N/bin). */
async function serverBin(): Promise<string> {
  const versions = (await readdir("/usr/lib/postgresql").catch(() => [])).sort((a, b) => Number(b) - Number(a));
  if (!versions[0]) throw new Error("no PostgreSQL server programs under /usr/lib/postgresql (initdb, pg_ctl)");
  return path.join("/usr/lib/postgresql", versions[0], "bin");
}

export interface OwnPostgres {
  /** URL of its `postgres` database. */
  url: string;
  /** Stops it at once (connections are refused until `start`). */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Freezes it, the postmaster and every backend (SIGSTOP): connections stay open, nothing answers. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Stops it and removes its data. */
  remove(): Promise<void>;
}

/**
 * A PostgreSQL server of the caller's own, in a temporary data directory on a free port, for tests
 * and fault runs that stop the database: the machine's shared one is never stopped. PostgreSQL will
 * not run as root, so as root it runs as the `postgres` user.
 */
export async function startOwnPostgres(): Promise<OwnPostgres> {
  const bin = await serverBin();
  const root = await mkdtemp(path.join(os.tmpdir(), "edge-ingest-pg-"));
  const data = path.join(root, "data");
  const port = await freePort();
  const asRoot = process.getuid?.() === 0;
  if (asRoot) {
    const { stdout } = await run("id", ["-u", "postgres"]);
    const { stdout: gid } = await run("id", ["-g", "postgres"]);
    await chown(root, Number(stdout), Number(gid));
  }
  const pg = (program: string, args: string[]) =>
    asRoot
      ? run("runuser", ["-u", "postgres", "--", path.join(bin, program), ...args])
      : run(path.join(bin, program), args);
  await pg("initdb", ["-D", data, "-A", "trust", "-U", "postgres", "--no-sync"]);
  const options = `-p ${port} -k ${root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`;
  const start = async () => {
    await pg("pg_ctl", ["-D", data, "-o", options, "-l", path.join(root, "log"), "-w", "start"]);
  };
  const stop = async () => {
    await pg("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]).catch(() => undefined);
  };
  await start();
  const signalAll = async (signal: "SIGSTOP" | "SIGCONT") => {
    const postmaster = Number((await readFile(path.join(data, "postmaster.pid"), "utf8")).split("\n")[0]);
    const { stdout } = await run("pgrep", ["-P", String(postmaster)]).catch(() => ({ stdout: "" }));
    const backends = stdout.split("\n").filter(Boolean).map(Number);
    // Stopped first, the postmaster starts no backend meanwhile; resumed last, it finds them running.
    const order = signal === "SIGSTOP" ? [postmaster, ...backends] : [...backends, postmaster];
    for (const pid of order) process.kill(pid, signal);
  };
  return {
    url: `postgresql://postgres@127.0.0.1:${port}/postgres`,
    start,
    stop,
    pause: () => signalAll("SIGSTOP"),
    resume: () => signalAll("SIGCONT"),
    remove: async () => {
      await stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}
