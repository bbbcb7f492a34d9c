/**
 * Errors the service's concerns throw for the API (src/api/errors.ts) to answer with a refusal of
 * the catalogue (src/ingest/refusals.ts): `not_found`, `conflict`, `unavailable`.
 */

/** A tenant, agent or credential that does not exist. */
export class NotFoundError extends Error {
  override name = "NotFoundError";
}

/** What is being created exists already. */
export class ConflictError extends Error {
  override name = "ConflictError";
}

/** The queue cannot take the submission now; nothing was stored, the producer may retry. */
export class QueueUnavailableError extends Error {
  override name = "QueueUnavailableError";
}

/** The process cannot start as configured; the message says what to change. */
export class StartupError extends Error {
  override name = "StartupError";
}
