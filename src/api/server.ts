import Fastify, { type FastifyInstance, LogController } from "fastify";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import type { Identifier } from "../credentials/identify.ts";
import type { Revocations } from "../credentials/revocations.ts";
import type { CredentialStore } from "../credentials/store.ts";
import type { Intake } from "../ingest/intake.ts";
import type { SubmissionQueue } from "../ingest/queue.ts";
import type { TenantLimitsStore } from "../limits/limits-store.ts";
import type { RateLimiter } from "../limits/rate-limiter.ts";
import type { FanOut } from "../live/fanout.ts";
import type { MetricStore } from "../store/metrics.ts";
import type { Telemetry } from "../telemetry/metrics.ts";
import { authPlugin } from "./auth.ts";
import { errorsPlugin } from "./errors.ts";
import { adminRoutes } from "./routes/admin.ts";
import { healthRoutes, type ReadinessCheck } from "./routes/health.ts";
import { ingestRoutes } from "./routes/ingest.ts";
import { queryRoutes } from "./routes/query.ts";
import { streamRoutes } from "./routes/stream.ts";

export interface ApiDeps {
  config: Config;
  logger: Logger;
  metrics: MetricStore;
  credentials: CredentialStore;
  identifier: Identifier;
  revocations: Revocations;
  intake: Intake;
  queue: SubmissionQueue;
  fanout: FanOut;
  telemetry: Telemetry;
  limiter: RateLimiter;
  tenantLimits: TenantLimitsStore;
  checks: Record<string, ReadinessCheck>;
}

/** The HTTP API, assembled from its plugins. */
export async function buildApiServer(deps: ApiDeps): Promise<FastifyInstance> {
  const { config, telemetry } = deps;
  const app = Fastify({
    loggerInstance: deps.logger,
    // One line per request would dominate the logs at ingest rates; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.HTTP_BODY_LIMIT_BYTES,
  }) as unknown as FastifyInstance;

  await app.register(errorsPlugin, {
    // Bodies refused before the ingest handler ran still count as rejected metrics.
    onError: (error, request) => {
      const isIngest = request.method === "POST" && request.routeOptions.url === "/api/v1/metrics";
      if (isIngest && (error.code === "too_large" || error.code === "bad_json")) {
        telemetry.rejected.inc({ source: "http", reason: error.code });
      }
    },
  });
  await app.register(authPlugin, { identifier: deps.identifier });
  await app.register(healthRoutes, { checks: deps.checks, registry: telemetry.registry });
  await app.register(ingestRoutes, {
    intake: deps.intake,
    limiter: deps.limiter,
    telemetry,
    limits: config.payloadLimits,
  });
  await app.register(queryRoutes, {
    metrics: deps.metrics,
    maxLimit: config.QUERY_MAX_LIMIT,
    maxSeriesPoints: config.SERIES_MAX_POINTS,
  });
  await app.register(streamRoutes, {
    fanout: deps.fanout,
    revocations: deps.revocations,
    heartbeatMs: config.SSE_HEARTBEAT_MS,
    maxBufferBytes: config.SSE_MAX_BUFFER_BYTES,
  });
  await app.register(adminRoutes, {
    credentials: deps.credentials,
    revocations: deps.revocations,
    tenantLimits: deps.tenantLimits,
    queue: deps.queue,
  });
  return app;
}
