/**
 * Whether a database error will go away by itself (the server is unreachable, restarting, shutting
 * down, out of connections, or a transaction lost a race), as opposed to a statement the database
 * refuses whatever the time. A transient error must never use up a job's attempts: the job waits for
 * the database instead (src/worker/bullmq-worker.ts).
 */
export function isTransientDatabaseError(error: unknown): boolean {
  const seen = new Set<unknown>();
  for (let e: unknown = error; e && typeof e === "object" && !seen.has(e); e = nextCause(e)) {
    seen.add(e);
    const { code, kind, message } = e as { code?: unknown; kind?: unknown; message?: unknown };
    if (typeof kind === "string" && TRANSIENT_KINDS.has(kind)) return true;
    if (typeof message === "string" && TRANSIENT_DRIVER_MESSAGES.test(message)) return true;
    if (typeof code === "string" && (TRANSIENT_NODE_CODES.has(code) || isTransientSqlState(code))) return true;
  }
  return false;
}

// Kinds of the driver adapters' errors (@prisma/driver-adapter-utils) that mean "not now".
const TRANSIENT_KINDS = new Set([
  "DatabaseNotReachable",
  "ConnectionClosed",
  "SocketTimeout",
  "TooManyConnections",
  "TransactionWriteConflict",
]);

/** node-postgres says a connection died, or a statement had no answer in time, without a code. */
const TRANSIENT_DRIVER_MESSAGES =
  /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Query read timeout)/;

const TRANSIENT_NODE_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENOTFOUND"]);

/**
 * PostgreSQL SQLSTATEs: connection exceptions (but a protocol violation, which the same bytes would
 * make again), shutdowns, resources, serialization and deadlocks, system errors.
 */
function isTransientSqlState(code: string): boolean {
  if (!/^[0-9A-Z]{5}$/.test(code)) return false;
  return (
    (code.startsWith("08") && code !== "08P01") ||
    code.startsWith("53") ||
    code.startsWith("58") ||
    code === "57P01" ||
    code === "57P02" ||
    code === "57P03" ||
    code === "40001" ||
    code === "40P01"
  );
}

/** The error wrapped by this one: Prisma keeps the driver's under `meta.driverAdapterError.cause`. */
function nextCause(error: object): unknown {
  const { cause, meta } = error as { cause?: unknown; meta?: { driverAdapterError?: unknown } };
  return cause ?? meta?.driverAdapterError;
}
