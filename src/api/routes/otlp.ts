import type { FastifyInstance, FastifyRequest } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import type { PayloadLimits } from "../../config.ts";
import { agentRule } from "../../formats/agents.ts";
import { readOtlpMetrics } from "../../formats/otlp.ts";
import {
  decodeOtlpRequest,
  encodeOtlpResponse,
  encodeOtlpStatus,
  type OtlpMetricsRequest,
} from "../../formats/otlp-proto.ts";
import { Rejected } from "../../ingest/refusals.ts";
import { refusalsAgent, writer } from "../access.ts";
import { decompressBody } from "../decompress.ts";
import { ApiError } from "../errors.ts";
import type { ReadingsSubmitter } from "../submit-readings.ts";

const PROTOBUF = "application/x-protobuf";
const JSON_TYPE = "application/json";

/** The resource attributes that name the agent with an ingest token, the first present wins. */
export const OTLP_AGENT_ATTRIBUTES = ["edge_ingest.agent_id", "host.name", "service.name"] as const;

/** gRPC's status codes, which OTLP/HTTP's error body (google.rpc.Status) carries. */
function grpcCode(status: number): number {
  if (status === 401) return 16; // UNAUTHENTICATED
  if (status === 403) return 7; // PERMISSION_DENIED
  if (status === 429) return 8; // RESOURCE_EXHAUSTED
  if (status === 503) return 14; // UNAVAILABLE
  if (status >= 500) return 13; // INTERNAL
  return 3; // INVALID_ARGUMENT
}

const wantsJson = (request: FastifyRequest) => request.headers["content-type"]?.startsWith(JSON_TYPE) === true;

/** OTLP/HTTP's error: a Status in the request's encoding. Retryable statuses (429, 503) carry Retry-After. */
function renderStatus(error: ApiError, request: FastifyRequest) {
  const code = grpcCode(error.statusCode);
  const message = `${error.code}: ${error.message}`;
  return wantsJson(request)
    ? { type: JSON_TYPE, body: JSON.stringify({ code, message }) }
    : { type: PROTOBUF, body: Buffer.from(encodeOtlpStatus(code, message)) };
}

/**
 * OTLP/HTTP metrics (`POST /v1/metrics`), for the OpenTelemetry SDKs' and the Collector's
 * `otlphttp` exporters: protobuf or JSON, gzip or not (docs/formats.md). Encapsulated: its body
 * parsers read protobuf as bytes and JSON as text, for this route only.
 */
export async function otlpRoutes(
  app: FastifyInstance,
  options: { submitter: ReadingsSubmitter; limits: PayloadLimits; bodyLimit: number },
) {
  const { submitter, limits } = options;
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(PROTOBUF, { parseAs: "buffer" }, (_request, body, done) => done(null, body));
  app.addContentTypeParser(JSON_TYPE, { parseAs: "string" }, (_request, body, done) => done(null, body));

  function decode(request: FastifyRequest): OtlpMetricsRequest {
    try {
      if (!wantsJson(request)) return decodeOtlpRequest(request.body as Buffer);
      const parsed: unknown = JSON.parse(request.body as string);
      if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) return parsed as OtlpMetricsRequest;
    } catch (error) {
      throw new ApiError(
        "bad_otlp",
        `the body is not an OTLP ExportMetricsServiceRequest: ${(error as Error).message}`,
      );
    }
    throw new ApiError("bad_otlp", "the body is not an OTLP ExportMetricsServiceRequest object");
  }

  app.withTypeProvider<ZodTypeProvider>().post(
    "/v1/metrics",
    {
      onRequest: app.authenticate,
      preParsing: decompressBody(options.bodyLimit),
      config: { ingest: true, renderError: renderStatus },
      schema: {
        summary: "OTLP/HTTP metrics export (protobuf or JSON); 200 once durable",
        description: `\`Authorization: Bearer <agent or ingest token>\`. Gauges and sums are readings; histograms and summaries their count, sum, min, max (and quantiles). With an ingest token the resource attribute ${OTLP_AGENT_ATTRIBUTES.join(", then ")} names the agent. Refused data points are counted in \`partialSuccess\` (docs/formats.md).`,
        tags: ["formats"],
        response: {
          200: z
            .unknown()
            .describe(
              "ExportMetricsServiceResponse (partialSuccess counts refused data points), in the request's encoding",
            ),
        },
      },
    },
    async (request, reply) => {
      const receivedAt = Date.now();
      const principal = writer(request.principal);
      const result = readOtlpMetrics(decode(request), {
        receivedAt,
        limits,
        agent: agentRule(principal, OTLP_AGENT_ATTRIBUTES),
      });
      if (result instanceof Rejected) {
        submitter.refused(principal.tenantId, refusalsAgent(principal), [result], receivedAt);
        throw new ApiError(result.reason, result.message);
      }
      const { points, rejected } = result;
      const agentId = refusalsAgent(principal, points[0]?.agentId);
      submitter.refused(principal.tenantId, agentId, rejected, receivedAt);
      if (points.length > 0) {
        const bytes = Number(request.headers["content-length"]) || (request.body as { length: number }).length;
        await submitter.submit(principal.tenantId, agentId, points, bytes, receivedAt);
      }
      const first = rejected[0];
      const errorMessage = first
        ? `${rejected.length} data points refused; the first ${first.reason}: ${first.message}`
        : "";
      if (wantsJson(request)) {
        const body = first ? { partialSuccess: { rejectedDataPoints: String(rejected.length), errorMessage } } : {};
        return reply.type(JSON_TYPE).send(JSON.stringify(body));
      }
      return reply.type(PROTOBUF).send(Buffer.from(encodeOtlpResponse(rejected.length, errorMessage)));
    },
  );
}
