import pino, { type Logger } from "pino";

/** Structured JSON logs; anything that may carry a secret is redacted before it is written. */
export function createLogger(level: string): Logger {
  return pino({
    level,
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
