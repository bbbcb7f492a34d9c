import { spawn } from "node:child_process";
import { once } from "node:events";
import { StartupError } from "../errors.ts";

/**
 * Runs `migrate` in a process of its own, through `entry` (node's arguments up to and including the
 * script, as this process was started): creating the embedded database grows PGlite's WebAssembly
 * memory by about 140 MiB that a process never gives back, so a first start that created it in its
 * own process would hold that for as long as it runs. Returns the migrations applied.
 */
export async function migrateApart(entry: string[], env: NodeJS.ProcessEnv): Promise<string[]> {
  // Its informational log is left out (the caller logs the result); warnings and errors pass through.
  const child = spawn(process.execPath, [...entry, "migrate"], {
    env: { ...env, LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    output += chunk;
  });
  const [code] = (await Promise.race([
    once(child, "exit"),
    once(child, "error").then(([error]) => Promise.reject(error)),
  ])) as [number | null];
  // Its result is the line `{"applied":[…]}`; a log line (pretty ones written from pino's own
  // thread may come after it) is passed on.
  const lines = output.split("\n").filter((line) => line.length > 0);
  const result = lines.find((line) => line.startsWith('{"applied":'));
  const logs = lines.filter((line) => line !== result);
  if (logs.length > 0) process.stdout.write(`${logs.join("\n")}\n`);
  if (code !== 0 || result === undefined) {
    throw new StartupError(`creating the embedded database in DATA_DIR failed (migrate exited with ${code})`);
  }
  return (JSON.parse(result) as { applied: string[] }).applied;
}
