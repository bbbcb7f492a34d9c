import pino, { type Logger } from "pino";

export type LogFormat = "json" | "pretty";

/** JSON lines for machines; coloured lines for a person at a terminal, unless `format` says otherwise. */
export function resolveLogFormat(format: LogFormat | undefined, isTTY = Boolean(process.stdout.isTTY)): LogFormat {
  return format ?? (isTTY ? "pretty" : "json");
}

/** Structured logs; anything that may carry a secret is redacted before it is written. */
export function createLogger(level: string, format: LogFormat = "json"): Logger {
  return pino({
    level,
    // pino-pretty runs in a worker thread of its own, so formatting never holds up the broker.
    ...(format === "pretty" && {
      transport: { target: "pino-pretty", options: { colorize: true, translateTime: "SYS:HH:MM:ss.l" } },
    }),
    redact: {
      paths: [
        "password",
        "token",
        "secret",
        "*.password",
        "*.token",
        "*.secret",
        "req.headers.authorization",
        "headers.authorization",
      ],
      censor: "[redacted]",
    },
  });
}

/**
 * A log call that writes at most `perInterval` lines per `intervalMs`, then, when the interval
 * ends, one line saying how many it held back (`suppressed`): a client flooding bad publishes must
 * not flood the logs too, and an operator still tells 20 refusals from 4,000. The summary comes at
 * the end of the interval whether or not anything is logged after it.
 */
export function rateLimitedLog(
  logger: Logger,
  perInterval: number,
  intervalMs = 10_000,
  level: "info" | "warn" | "error" = "warn",
) {
  let windowStart = 0;
  let written = 0;
  let suppressed = 0;
  let held = "";
  let summary: NodeJS.Timeout | undefined;
  const summarize = () => {
    clearTimeout(summary);
    summary = undefined;
    if (suppressed === 0) return;
    logger[level](
      { suppressed, written, intervalMs },
      `${held}: ${suppressed} more like this in ${intervalMs / 1000} s were not written`,
    );
    suppressed = 0;
  };
  return (fields: Record<string, unknown>, message: string) => {
    const now = Date.now();
    if (now - windowStart >= intervalMs) {
      summarize();
      windowStart = now;
      written = 0;
    }
    if (written < perInterval) {
      written++;
      logger[level](fields, message);
      return;
    }
    suppressed++;
    held = message;
    // Unref'd: a summary due never holds the process open.
    summary ??= setTimeout(summarize, windowStart + intervalMs - now).unref();
  };
}
