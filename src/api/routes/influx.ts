import type { FastifyInstance, FastifyRequest } from "fastify";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import type { PayloadLimits } from "../../config.ts";
import { agentRule } from "../../formats/agents.ts";
import { type LineRejection, type Precision, readLineProtocol } from "../../formats/line-protocol.ts";
import { Rejected } from "../../ingest/refusals.ts";
import { refusalsAgent, writer } from "../access.ts";
import { decompressBody } from "../decompress.ts";
import { ApiError } from "../errors.ts";
import { agentId } from "../schemas.ts";
import type { ReadingsSubmitter } from "../submit-readings.ts";

/** The most refused lines an answer lists (it always counts them all). */
const LISTED_REJECTIONS = 100;

/** InfluxDB's error codes (its API's `code`), by the status they go with. */
function influxCode(status: number): string {
  if (status === 401) return "unauthorized";
  if (status === 403) return "forbidden";
  if (status === 413) return "request too large";
  if (status === 429) return "too many requests";
  if (status === 503) return "unavailable";
  if (status >= 500) return "internal error";
  return "invalid";
}

/** A batch too big is 413 to an InfluxDB client: Telegraf then splits the batch and sends the halves. */
const statusOf = (error: ApiError) => (error.code === "too_many" ? 413 : error.statusCode);

/** The v2 API's error body (`code`, `message`, and `line` for line protocol), with the refusal's name beside. */
function renderV2(error: ApiError) {
  const status = statusOf(error);
  return { status, body: { code: influxCode(status), message: error.message, reason: error.code, ...error.extra } };
}

/** The v1 API's: `{"error": message}`. */
function renderV1(error: ApiError) {
  return { status: statusOf(error), body: { error: error.message, reason: error.code, ...error.extra } };
}

const V1_PRECISIONS: Record<string, Precision> = { n: "ns", ns: "ns", u: "us", us: "us", ms: "ms", s: "s" };

/** What every refusal of these routes says beside InfluxDB's own fields. */
const refusalDetails = {
  reason: z.string().describe("the refusal's name (docs/refusals.md)"),
  line: z.int().optional().describe("the first refused line, from 1"),
  rejected: z
    .array(z.object({ line: z.int(), reason: z.string(), message: z.string() }))
    .optional()
    .describe(`the refused lines (the first ${LISTED_REJECTIONS})`),
  rejected_count: z.int().optional(),
  accepted: z.int().optional().describe("readings stored from the same body"),
};
const v2Error = z
  .object({
    code: z.string().describe("InfluxDB's error code: invalid, unauthorized, request too large, …"),
    message: z.string(),
    ...refusalDetails,
  })
  .meta({ id: "InfluxError" });
const v1Error = z.object({ error: z.string(), ...refusalDetails }).meta({ id: "InfluxV1Error" });

/**
 * InfluxDB's write APIs, for Telegraf and the InfluxDB client libraries: `POST /api/v2/write` and
 * the v1 `POST /write`. Line protocol in, the same submission as the JSON API out (docs/formats.md).
 * Encapsulated (not fastify-plugin): its body parser reads any content type as text, for these routes only.
 */
export async function influxRoutes(
  app: FastifyInstance,
  options: { submitter: ReadingsSubmitter; limits: PayloadLimits; bodyLimit: number },
) {
  const { submitter, limits } = options;
  app.removeAllContentTypeParsers();
  app.addContentTypeParser("*", { parseAs: "string" }, (_request, body, done) => done(null, body));

  async function write(request: FastifyRequest, precision: Precision, requested: string | undefined) {
    const receivedAt = Date.now();
    const principal = writer(request.principal);
    const result = readLineProtocol(request.body as string, {
      precision,
      receivedAt,
      limits,
      agent: agentRule(principal, ["agent_id", "host"], requested),
    });
    if (result instanceof Rejected) {
      submitter.refused(principal.tenantId, refusalsAgent(principal, requested), [result], receivedAt);
      throw new ApiError(result.reason, result.message);
    }
    const { points, rejected } = result;
    const label = refusalsAgent(principal, requested ?? points[0]?.agentId);
    submitter.refused(principal.tenantId, label, rejected, receivedAt);
    if (points.length > 0) {
      const bytes = Number(request.headers["content-length"]) || Buffer.byteLength(request.body as string);
      await submitter.submit(principal.tenantId, points[0]?.agentId ?? label, points, bytes, receivedAt);
    }
    const first = rejected[0];
    if (first) throw partialWrite(first, rejected, points.length);
  }

  const auth = { onRequest: app.authenticate, preParsing: decompressBody(options.bodyLimit) };
  const api = app.withTypeProvider<ZodTypeProvider>();
  api.post(
    "/api/v2/write",
    {
      ...auth,
      config: { ingest: true, renderError: renderV2 },
      schema: {
        summary: "InfluxDB v2 write: line protocol; 204 once durable",
        description:
          "`Authorization: Token <agent or ingest token>` (or Bearer, or Basic). Each numeric field is a reading named `measurement_field`; a refused line costs itself: the others are stored and the answer is 400 with the first refused `line` (docs/formats.md).",
        tags: ["formats"],
        querystring: z.object({
          org: z.string().optional().describe("accepted and ignored: the credential names the tenant"),
          orgID: z.string().optional().describe("accepted and ignored"),
          bucket: z.string().optional().describe("accepted and ignored"),
          precision: z.enum(["ns", "us", "ms", "s"]).default("ns").describe("unit of the lines' timestamps"),
          agent_id: agentId.optional().describe("ingest token: the agent of lines without an agent_id or host tag"),
        }),
        response: { 204: z.null().describe("every line stored"), "4xx": v2Error, "5xx": v2Error },
      },
    },
    async (request, reply) => {
      const { precision, agent_id: requested } = request.query;
      await write(request, precision, requested);
      return reply.status(204).send(null);
    },
  );

  api.post(
    "/write",
    {
      ...auth,
      config: { ingest: true, renderError: renderV1 },
      schema: {
        summary: "InfluxDB v1 write: line protocol; 204 once durable",
        description: "Credentials as `u` and `p`, Basic, or a Token / Bearer header; otherwise as /api/v2/write.",
        tags: ["formats"],
        querystring: z.object({
          db: z.string().optional().describe("accepted and ignored"),
          rp: z.string().optional().describe("accepted and ignored"),
          u: z.string().optional().describe("a credential's username"),
          p: z.string().optional().describe("its secret"),
          precision: z.enum(["n", "ns", "u", "us", "ms", "s"]).default("ns").describe("unit of the lines' timestamps"),
          agent_id: agentId.optional(),
        }),
        response: { 204: z.null().describe("every line stored"), "4xx": v1Error, "5xx": v1Error },
      },
    },
    async (request, reply) => {
      const { precision, agent_id: requested } = request.query;
      await write(request, V1_PRECISIONS[precision] as Precision, requested);
      return reply.status(204).send(null);
    },
  );
}

/** Some lines stored, some refused: InfluxDB's partial write, a 400 naming the first refused line. */
function partialWrite(first: LineRejection, rejected: LineRejection[], accepted: number): ApiError {
  const of = accepted > 0 ? `partial write: ${rejected.length} refused, ${accepted} readings stored` : "nothing stored";
  return new ApiError(first.reason, `${of}; line ${first.line}: ${first.reason}: ${first.message}`, {
    extra: {
      line: first.line,
      rejected: rejected.slice(0, LISTED_REJECTIONS),
      rejected_count: rejected.length,
      accepted,
    },
    status: 400,
  });
}
