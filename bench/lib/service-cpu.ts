import { readdirSync } from "node:fs";
import { Redis } from "ioredis";
import pg from "pg";
import { procStat } from "./processes.ts";

/** CPU seconds used so far by the PostgreSQL server and the Redis the scenarios share. */
export interface ServiceCpu {
  postgresql: number;
  redis: number;
}

/** `procStat`, or undefined for a process that exited while /proc was read. */
function procStatIfAlive(pid: number): ReturnType<typeof procStat> | undefined {
  try {
    return procStat(pid);
  } catch {
    return undefined;
  }
}

/** The postmaster's pid: the parent of a backend of ours. */
async function findPostmaster(url: string): Promise<number> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const backend = (await client.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]?.pid as number;
    const postmaster = procStatIfAlive(backend)?.parent;
    if (postmaster === undefined) {
      throw new Error(`PostgreSQL at ${url} is not a process of this machine: its CPU cannot be read`);
    }
    return postmaster;
  } finally {
    await client.end();
  }
}

/**
 * Found once per server: a connection made for each reading would add its own backend's start-up
 * to the CPU measured.
 */
const postmasters = new Map<string, Promise<number>>();

/**
 * The whole PostgreSQL server's CPU: the postmaster, its live children (backends, WAL writer,
 * checkpointer) and the children it has reaped (backends of connections since closed). The server
 * must run on this machine; every database on it counts, so nothing else should use it meanwhile.
 */
export async function postgresCpu(url: string): Promise<number> {
  let found = postmasters.get(url);
  if (!found) {
    found = findPostmaster(url);
    postmasters.set(url, found);
  }
  const postmaster = await found;
  const server = procStatIfAlive(postmaster);
  if (!server) throw new Error(`the PostgreSQL server at ${url} (pid ${postmaster}) has stopped`);
  let seconds = server.cpuSeconds + server.reapedChildrenCpuSeconds;
  for (const entry of readdirSync("/proc")) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    const child = procStatIfAlive(pid);
    if (child?.parent === postmaster) seconds += child.cpuSeconds;
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

/** Commands Redis has executed since it started (`INFO stats`), for commands per reading. */
export async function redisCommands(url: string): Promise<number> {
  const redis = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    return Number(/^total_commands_processed:(\d+)/m.exec(await redis.info("stats"))?.[1]);
  } finally {
    redis.disconnect();
  }
}

export async function serviceCpu(postgresUrl: string, redisUrl: string): Promise<ServiceCpu> {
  const [postgresql, redis] = await Promise.all([postgresCpu(postgresUrl), redisCpu(redisUrl)]);
  return { postgresql, redis };
}
