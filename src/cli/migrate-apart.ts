import { spawn } from "node:child_process";
import { once } from "node:events";
import { StartupError } from "../app.ts";

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
  const lines = output.trimEnd().split("\n");
  const result = lines.pop() ?? "";
  if (lines.length > 0) process.stdout.write(`${lines.join("\n")}\n`);
  if (code !== 0)
    throw new StartupError(`creating the embedded database in DATA_DIR failed (migrate exited with ${code})`);
  return (JSON.parse(result) as { applied: string[] }).applied;
}
