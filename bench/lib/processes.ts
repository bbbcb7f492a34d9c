import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
/** Linux reports process CPU times in these ticks a second (USER_HZ). */
const CLOCK_TICKS = 100;

export { freePort } from "../../test/helpers/redis-server.ts";

export interface Managed {
  name: string;
  child: ChildProcess;
  /** Lines the process printed on stdout, and on stderr. */
  lines: string[];
  errors: string[];
}

/** Spawns a process and resolves once a line of its stdout includes `readyText`. */
export function start(
  name: string,
  command: string,
  args: string[],
  options: { env?: Record<string, string>; readyText: string; timeoutMs?: number },
): Promise<Managed> {
  const child = spawn(command, args, {
    cwd: ROOT,
    env: { ...process.env, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  const errors: string[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${name} did not become ready: ${errors.join("").slice(-2000)}`));
    }, options.timeoutMs ?? 60_000);
    const reader = (into: string[]) => {
      let buffered = "";
      return (chunk: string) => {
        buffered += chunk;
        const parts = buffered.split("\n");
        buffered = parts.pop() ?? "";
        for (const line of parts) {
          into.push(line);
          if (line.includes(options.readyText)) {
            clearTimeout(timer);
            resolve({ name, child, lines, errors });
          }
        }
      };
    };
    // Ready text may come on either stream (C programs buffer a piped stdout).
    child.stdout?.setEncoding("utf8").on("data", reader(lines));
    child.stderr?.setEncoding("utf8").on("data", reader(errors));
    child.once("exit", (code) => {
      clearTimeout(timer);
      const said = [...errors, ...lines].join("\n").slice(-2000);
      reject(new Error(`${name} exited with ${code} before it was ready: ${said}`));
    });
  });
}

/** Runs a TypeScript entry under tsx; `nodeArgs` go to node itself (e.g. --cpu-prof). */
export function startNode(
  name: string,
  script: string,
  args: string[],
  options: { env?: Record<string, string>; readyText: string; timeoutMs?: number; nodeArgs?: string[] },
): Promise<Managed> {
  return start(name, process.execPath, [...(options.nodeArgs ?? []), "--import", "tsx", script, ...args], options);
}

export interface ProcessStats {
  cpuSeconds: number;
  peakRssMiB: number;
}

/**
 * A live process's parent and CPU seconds, from /proc/<pid>/stat: its own (utime + stime) and those
 * of the children it has waited for (cutime + cstime). Throws for a process that is gone.
 */
export function procStat(pid: number): { parent: number; cpuSeconds: number; reapedChildrenCpuSeconds: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // After the command name, which may hold spaces: state, ppid, … utime (12th), stime, cutime, cstime.
  const fields = stat
    .slice(stat.lastIndexOf(")") + 2)
    .split(" ")
    .map(Number);
  const ticks = (first: number) => ((fields[first] as number) + (fields[first + 1] as number)) / CLOCK_TICKS;
  return { parent: fields[1] as number, cpuSeconds: ticks(11), reapedChildrenCpuSeconds: ticks(13) };
}

/** CPU time and peak RSS (VmHWM) of a live process, read from /proc. */
export function statsOf(pid: number): ProcessStats {
  const { cpuSeconds } = procStat(pid);
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const hwm = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  return { cpuSeconds, peakRssMiB: Number(hwm ?? 0) / 1024 };
}

export function currentRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
}

/** Sends `signal` and waits for the process to exit; SIGKILL after `timeoutMs`. */
export async function stop(
  managed: Managed,
  signal: NodeJS.Signals = "SIGTERM",
  timeoutMs = 30_000,
): Promise<number | null> {
  const { child } = managed;
  if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  child.kill(signal);
  const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

export function percentile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] ?? null;
}

/** The median of unsorted values (0 for none). */
export const median = (values: number[]): number =>
  percentile(
    values.toSorted((a, b) => a - b),
    50,
  ) ?? 0;
