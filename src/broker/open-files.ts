import { readFile } from "node:fs/promises";
import type { Logger } from "pino";

/** Files a broker process holds besides its MQTT connections: database and Redis connections, HTTP, logs. */
export const FILES_BESIDES_CONNECTIONS = 256;

/** The soft limit on open files stated in a /proc/<pid>/limits text; undefined when unlimited or absent. */
export function openFilesLimit(limits: string): number | undefined {
  const soft = /^Max open files\s+(\S+)/m.exec(limits)?.[1];
  return soft === undefined || soft === "unlimited" ? undefined : Number(soft);
}

/**
 * Every MQTT connection is a file descriptor. Past the process's limit the kernel's connections
 * are closed as they are accepted (libuv), before the broker sees them, so MQTT_MAX_CONNECTIONS is
 * never reached and nothing is counted: say so at start-up instead.
 */
export async function warnIfTooFewFiles(maxConnections: number, logger: Logger): Promise<void> {
  // Not Linux: no /proc to read, nothing to say.
  const limit = openFilesLimit(await readFile("/proc/self/limits", "utf8").catch(() => ""));
  if (limit === undefined || limit >= maxConnections + FILES_BESIDES_CONNECTIONS) return;
  logger.warn(
    { openFilesLimit: limit, MQTT_MAX_CONNECTIONS: maxConnections },
    `this process may open ${limit} files, too few for MQTT_MAX_CONNECTIONS=${maxConnections} (one a connection, ` +
      `${FILES_BESIDES_CONNECTIONS} besides): connections past it are closed as they arrive, uncounted. ` +
      "Raise the limit (systemd LimitNOFILE, docker --ulimit nofile, ulimit -n) or lower MQTT_MAX_CONNECTIONS",
  );
}
