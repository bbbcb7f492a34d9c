import Fastify, { type FastifyInstance, LogController } from "fastify";
import type { Logger } from "pino";
import type { Config } from "../config.ts";
import { consolePlugin } from "../console/plugin.ts";
import type { TenantAuthorities } from "../credentials/authorities.ts";
import type { Identifier } from "../credentials/identify.ts";
import type { Revocations } from "../credentials/revocations.ts";
import type { CredentialStore } from "../credentials/store.ts";
import type { Intake } from "../ingest/intake.ts";
import type { SubmissionQueue } from "../ingest/queue.ts";
import type { TenantLimitsStore } from "../limits/limits-store.ts";
import type { RateLimiter } from "../limits/rate-limiter.ts";
import type { FanOut } from "../live/fanout.ts";
import type { LiveRejections } from "../live/rejections.ts";
import type { Presence } from "../presence/presence.ts";
import type { AgentDirectory } from "../store/agents.ts";
import type { ReadingStore } from "../store/readings.ts";
import type { Telemetry } from "../telemetry/prometheus.ts";
import { apiDocsPlugin } from "./api-docs.ts";
import { authPlugin } from "./auth.ts";
import { errorsPlugin } from "./errors.ts";
import { openapiPlugin } from "./openapi.ts";
import { adminRoutes } from "./routes/admin.ts";
import { agentRoutes } from "./routes/agents.ts";
import { healthRoutes, type ReadinessCheck } from "./routes/health.ts";
import { influxRoutes } from "./routes/influx.ts";
import { ingestRoutes } from "./routes/ingest.ts";
import { otlpRoutes } from "./routes/otlp.ts";
import { queryRoutes } from "./routes/query.ts";
import { rejectionRoutes } from "./routes/rejections.ts";
import { streamRoutes } from "./routes/stream.ts";
import { ReadingsSubmitter } from "./submit-readings.ts";

/** What the `api` role serves besides the probes: the API and the console. */
export interface ApiDeps {
  readings: ReadingStore;
  agents: AgentDirectory;
  credentials: CredentialStore;
  authorities: TenantAuthorities;
  identifier: Identifier;
  revocations: Revocations;
  intake: Intake;
  queue: SubmissionQueue;
  fanout: FanOut;
  rejections: LiveRejections;
  limiter: RateLimiter;
  tenantLimits: TenantLimitsStore;
  presence: Presence;
}

export interface HttpDeps {
  config: Config;
  logger: Logger;
  telemetry: Telemetry;
  checks: Record<string, ReadinessCheck>;
  /** Present in a process with the `api` role. */
  api?: ApiDeps;
  /** Where devices connect, as the console tells them: this process's brokers, else the configured ports. */
  /** The MQTT ports the console shows (read when asked: the listeners open after the HTTP server is built). */
  mqttPorts: () => { port: number; ws_port: number };
}

/**
 * The HTTP server of every process: /healthz, /readyz and /metrics whatever the roles, and with
 * the `api` role the API, its OpenAPI document and the console. Assembled here from its plugins.
 */
export async function buildHttpServer(deps: HttpDeps): Promise<FastifyInstance> {
  const { config, telemetry, api } = deps;
  const app = Fastify({
    loggerInstance: deps.logger,
    // One line per request would dominate the logs at ingest rates; errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.HTTP_BODY_LIMIT_BYTES,
  }) as unknown as FastifyInstance;

  await app.register(errorsPlugin, {
    // Bodies refused before the ingest handler ran still count as rejected metrics.
    onError: (error, request) => {
      const refusedBody = error.code === "too_large" || error.code === "bad_json" || error.code === "bad_otlp";
      if (request.routeOptions.config?.ingest && refusedBody) {
        telemetry.rejected.inc({ source: "http", reason: error.code });
      }
    },
  });
  await app.register(openapiPlugin);
  await app.register(healthRoutes, { checks: deps.checks, registry: telemetry.registry });
  if (!api) return app;

  await app.register(authPlugin, { identifier: api.identifier });
  const submitter = new ReadingsSubmitter({
    intake: api.intake,
    limiter: api.limiter,
    telemetry,
    rejections: api.rejections,
  });
  const doors = { submitter, telemetry, limits: config.payloadLimits, bodyLimit: config.HTTP_BODY_LIMIT_BYTES };
  await app.register(ingestRoutes, doors);
  await app.register(influxRoutes, doors);
  await app.register(otlpRoutes, doors);
  await app.register(queryRoutes, {
    readings: api.readings,
    maxLimit: config.QUERY_MAX_LIMIT,
    maxSeriesPoints: config.SERIES_MAX_POINTS,
  });
  await app.register(streamRoutes, {
    fanout: api.fanout,
    rejections: api.rejections,
    revocations: api.revocations,
    heartbeatMs: config.SSE_HEARTBEAT_MS,
    maxBufferBytes: config.SSE_MAX_BUFFER_BYTES,
  });
  await app.register(rejectionRoutes, {
    history: api.rejections.history,
    maxLimit: config.QUERY_MAX_LIMIT,
    windowHours: config.REJECTION_HISTORY_HOURS,
  });
  await app.register(agentRoutes, {
    credentials: api.credentials,
    agents: api.agents,
    presence: api.presence,
    maxLimit: config.QUERY_MAX_LIMIT,
    mqtt: deps.mqttPorts,
  });
  await app.register(adminRoutes, {
    credentials: api.credentials,
    authorities: api.authorities,
    revocations: api.revocations,
    tenantLimits: api.tenantLimits,
    queue: api.queue,
    presence: api.presence,
  });
  await app.register(apiDocsPlugin);
  await app.register(consolePlugin);
  return app;
}
