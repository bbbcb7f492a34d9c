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
 * A log call that writes at most `perInterval` lines per `intervalMs`, then says how many it
 * held back: a client flooding bad publishes must not flood the logs too.
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
  return (fields: Record<string, unknown>, message: string) => {
    const now = Date.now();
    if (now - windowStart >= intervalMs) {
      if (suppressed > 0) logger[level]({ suppressed }, "similar log lines were suppressed");
      windowStart = now;
      written = 0;
      suppressed = 0;
    }
    if (written < perInterval) {
      written++;
      logger[level](fields, message);
    } else {
      suppressed++;
    }
  };
}
