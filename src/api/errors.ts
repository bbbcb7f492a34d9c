import type { FastifyError, FastifyInstance, FastifyRequest } from "fastify";
import fp from "fastify-plugin";
import { hasZodFastifySchemaValidationErrors } from "fastify-type-provider-zod";
import type { Logger } from "pino";
import { ConflictError, NotFoundError, QueueUnavailableError } from "../errors.ts";
import { REFUSALS, type RefusalName } from "../ingest/refusals.ts";
import { rateLimitedLog } from "../logger.ts";
import { isTransientDatabaseError } from "../store/database-errors.ts";

declare module "fastify" {
  interface FastifyContextConfig {
    /**
     * How the route's refusals are written, for a route that speaks another API's error shape
     * (InfluxDB's, OTLP's); the default is `{error: {code, message}}` with the refusal's status.
     */
    renderError?: (error: ApiError, request: FastifyRequest) => { status?: number; type?: string; body: unknown };
    /** A route whose refused bodies (too large, not parseable) count as rejected readings. */
    ingest?: boolean;
  }
}

/**
 * A refusal of the catalogue (src/ingest/refusals.ts) the client caused or can act on; rendered
 * as `{error: {code, message}}` with the refusal's HTTP status.
 */
export class ApiError extends Error {
  readonly statusCode: number;
  readonly extra: Record<string, unknown>;
  /** Sent as `Retry-After`: when the client may try again. */
  readonly retryAfterSeconds?: number;

  constructor(
    readonly code: RefusalName,
    message: string,
    options: {
      extra?: Record<string, unknown>;
      retryAfterSeconds?: number;
      /** Only for a status fastify chose, which the catalogue's `bad_request` stands for. */
      status?: number;
    } = {},
  ) {
    super(message);
    this.statusCode = options.status ?? REFUSALS[code].status;
    this.extra = options.extra ?? {};
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

const FASTIFY_CODES: Record<string, RefusalName> = {
  FST_ERR_CTP_BODY_TOO_LARGE: "too_large",
  FST_ERR_CTP_INVALID_JSON_BODY: "bad_json",
  FST_ERR_CTP_EMPTY_JSON_BODY: "bad_json",
  FST_ERR_CTP_INVALID_MEDIA_TYPE: "unsupported_media_type",
};

/** A refused field with a code of its own, by where it was; any other refused field is `bad_request`. */
const FIELD_CODES: Record<string, RefusalName> = {
  "querystring/agent_id": "bad_agent_id",
  "body/agent_id": "bad_agent_id",
  "querystring/name": "bad_name",
};

/** A request the route's schema refused: its first problem, named by field. */
function validationError(error: FastifyError): ApiError {
  const [first] = error.validation ?? [];
  const field = first?.instancePath.split("/")[1] ?? "";
  const message = first?.message ?? "invalid request";
  // Messages the schemas wrote themselves name their field; zod's own ones do not.
  const named = field === "" || message.startsWith(field) ? message : `${field}: ${message}`;
  const where = error.validationContext && field === "" ? `${error.validationContext}: ` : "";
  return new ApiError(FIELD_CODES[`${error.validationContext}/${field}`] ?? "bad_request", `${where}${named}`);
}

function toApiError(error: FastifyError | Error): ApiError {
  if (error instanceof ApiError) return error;
  if (hasZodFastifySchemaValidationErrors(error)) return validationError(error as FastifyError);
  if (error instanceof QueueUnavailableError) {
    return new ApiError("unavailable", `${error.message}; nothing was stored, retry later`);
  }
  if (isTransientDatabaseError(error)) {
    return new ApiError("unavailable", "the database is unavailable; nothing was changed, retry later");
  }
  if (error instanceof NotFoundError) return new ApiError("not_found", error.message);
  if (error instanceof ConflictError) return new ApiError("conflict", error.message);
  const fastifyError = error as FastifyError;
  const known = fastifyError.code ? FASTIFY_CODES[fastifyError.code] : undefined;
  if (known) return new ApiError(known, fastifyError.message);
  if (fastifyError.validation) return new ApiError("bad_request", fastifyError.message);
  if (fastifyError.statusCode && fastifyError.statusCode < 500) {
    return new ApiError("bad_request", fastifyError.message, { status: fastifyError.statusCode });
  }
  return new ApiError("internal", "internal error");
}

/**
 * Every error leaves as `{error: {code, message}}` with its status, or as its route renders it;
 * 5xx are logged, 4xx are not.
 */
export const errorsPlugin = fp(
  async (app: FastifyInstance, options: { onError?: (error: ApiError, request: FastifyRequest) => void }) => {
    // An outage fails every request alike: a few lines a minute say so.
    const logFailure = rateLimitedLog(app.log as Logger, 5, 60_000, "error");
    app.setErrorHandler((error: FastifyError | Error, request, reply) => {
      const apiError = toApiError(error);
      // A fault of ours, or a database outage (which nothing else in the API process logs).
      if (apiError.code === "internal" || isTransientDatabaseError(error)) {
        logFailure({ err: error, method: request.method, url: request.routeOptions.url }, "request failed");
      }
      options.onError?.(apiError, request);
      const retryAfter = apiError.retryAfterSeconds ?? (apiError.statusCode === 503 ? 1 : undefined);
      if (retryAfter !== undefined) reply.header("retry-after", String(retryAfter));
      const render = request.routeOptions.config?.renderError;
      if (render) {
        const { status, type, body } = render(apiError, request);
        if (type) reply.type(type);
        return reply.status(status ?? apiError.statusCode).send(body);
      }
      return reply
        .status(apiError.statusCode)
        .send({ error: { code: apiError.code, message: apiError.message }, ...apiError.extra });
    });
    app.setNotFoundHandler((request, reply) =>
      reply.status(404).send({ error: { code: "not_found", message: `no route ${request.method} ${request.url}` } }),
    );
  },
  { name: "errors" },
);
