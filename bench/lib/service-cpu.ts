import { readdirSync, readFileSync } from "node:fs";
import { Redis } from "ioredis";
import pg from "pg";
import { CLOCK_TICKS } from "./processes.ts";

/** CPU seconds used so far by the PostgreSQL server and the Redis the scenarios share. */
export interface ServiceCpu {
  postgresql: number;
  redis: number;
}

/** utime, stime, cutime, cstime of a process (the last two: of its children it has waited for). */
function cpuFields(pid: number): { parent: number; own: number; reaped: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat
      .slice(stat.lastIndexOf(")") + 2)
      .split(" ")
      .map(Number);
    return {
      parent: fields[1] as number,
      own: ((fields[11] as number) + (fields[12] as number)) / CLOCK_TICKS,
      reaped: ((fields[13] as number) + (fields[14] as number)) / CLOCK_TICKS,
    };
  } catch {
    // A process that exited while the list was read.
    return undefined;
  }
}

/**
 * The whole PostgreSQL server's CPU: the postmaster, its live children (backends, WAL writer,
 * checkpointer) and the children it has reaped (backends of connections since closed). The server
 * must run on this machine; every database on it counts, so nothing else should use it meanwhile.
 */
export async function postgresCpu(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  let postmaster: number | undefined;
  try {
    const backend = (await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]?.pid as number;
    postmaster = cpuFields(backend)?.parent;
  } finally {
    await client.end();
  }
  const server = postmaster === undefined ? undefined : cpuFields(postmaster);
  if (postmaster === undefined || server === undefined) {
    throw new Error(`PostgreSQL at ${url} is not a process of this machine: its CPU cannot be read`);
  }
  let seconds = server.own + server.reaped;
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const child = cpuFields(pid);
    if (child?.parent === postmaster) seconds += child.own;
  }
  return seconds;
}

/** Redis's own account of its CPU (INFO cpu: the main process, user and system). */
async function redisCpu(url: string): Promise<number> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    const info = await redis.info("cpu");
    const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, "m").exec(info)?.[1] ?? Number.NaN);
    return field("used_cpu_user") + field("used_cpu_sys");
  } finally {
    redis.disconnect();
  }
}

export async function serviceCpu(postgresUrl: string, redisUrl: string): Promise<ServiceCpu> {
  const [postgresql, redis] = await Promise.all([postgresCpu(postgresUrl), redisCpu(redisUrl)]);
  return { postgresql, redis };
}
