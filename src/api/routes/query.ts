import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { AGENT_ID_PATTERN, METRIC_NAME_PATTERN } from "../../ingest/payload.ts";
import type { LatestPosition, ReadingStore } from "../../store/readings.ts";
import { readScope } from "../access.ts";
import { ApiError } from "../errors.ts";
import { decodeCursor, encodeCursor, jsonPageBody, pageOf } from "../paging.ts";
import {
  agentId,
  aggregatesParam,
  cursorParam,
  errorReplies,
  latestRow,
  metricName,
  metricRow,
  page,
  pageLimit,
  seriesBucket,
  stepParam,
  timeParam,
  timestamp,
} from "../schemas.ts";
import { DEFAULT_SERIES_BUCKETS, DEFAULT_SERIES_WINDOW_MS, defaultSeriesStep } from "../series-window.ts";

const badRequest = (message: string) => new ApiError("bad_request", message);

/**
 * The read API, one tenant at a time: readings (newest first, paginated), a metric's aggregated
 * series in time buckets, and the latest value of every series.
 */
export const queryRoutes = fp(
  async (app: FastifyInstance, options: { readings: ReadingStore; maxLimit: number; maxSeriesPoints: number }) => {
    const { readings, maxLimit } = options;
    const api = app.withTypeProvider<ZodTypeProvider>();
    const tags = ["metrics"];

    api.get(
      "/api/v1/metrics",
      {
        onRequest: app.authenticate,
        schema: {
          summary: "Readings, newest first, a page at a time",
          tags,
          querystring: z.object({
            agent_id: agentId.optional(),
            name: metricName.optional(),
            from: timeParam("from").optional(),
            to: timeParam("to").optional(),
            limit: pageLimit(maxLimit),
            cursor: cursorParam.optional(),
          }),
          response: { 200: page(metricRow), ...errorReplies },
        },
      },
      async (request) => {
        const q = request.query;
        const scope = readScope(request.principal, q.agent_id);
        const after =
          q.cursor === undefined
            ? undefined
            : decodeCursor<{ ts: string; id: string }>(
                q.cursor,
                (c) => typeof c.ts === "string" && Number.isFinite(Date.parse(c.ts)) && /^\d+$/.test(String(c.id)),
              );
        const rows = await readings.query({ ...scope, name: q.name, from: q.from, to: q.to }, q.limit + 1, after);
        return pageOf(rows, q.limit, (last) => encodeCursor({ ts: last.ts, id: last.id }));
      },
    );

    api.get(
      "/api/v1/metrics/series",
      {
        onRequest: app.authenticate,
        schema: {
          summary: "A metric's readings aggregated in time buckets",
          tags,
          querystring: z.object({
            name: metricName,
            agent_id: agentId.optional(),
            from: timeParam("from").optional().describe("ISO-8601 or epoch milliseconds; default: `to` − 1 h"),
            to: timeParam("to").optional().describe("ISO-8601 or epoch milliseconds; default: now"),
            step: stepParam
              .optional()
              .describe(
                `bucket width (\`30s\`, \`1m\`, \`6h\`, \`1d\`); default: the shortest of 1s, 5s, 10s, 15s, 30s, 1m, 2m, 5m, 10m, 15m, 30m, 1h, 2h, 3h, 6h, 12h, 1d, 7d that makes at most ${DEFAULT_SERIES_BUCKETS} buckets (or SERIES_MAX_POINTS, if fewer) of the window`,
              ),
            agg: aggregatesParam,
          }),
          response: {
            200: z.object({
              name: z.string(),
              agent_id: z.string().optional(),
              from: timestamp.describe("the window's start, as given or defaulted"),
              to: timestamp.describe("the window's end, as given or defaulted"),
              step_ms: z.int(),
              buckets: z.array(seriesBucket),
            }),
            ...errorReplies,
          },
        },
      },
      async (request) => {
        const { name, agg } = request.query;
        const to = request.query.to ?? Date.now();
        const from = request.query.from ?? to - DEFAULT_SERIES_WINDOW_MS;
        const step = request.query.step ?? defaultSeriesStep(to - from, options.maxSeriesPoints);
        const scope = readScope(request.principal, request.query.agent_id);
        if (to <= from) throw badRequest("from must be before to");
        if ((to - from) / step > options.maxSeriesPoints) {
          throw badRequest(`at most ${options.maxSeriesPoints} buckets: widen step or narrow from..to`);
        }
        const buckets = await readings.series({ ...scope, name, from, to }, step, agg);
        return {
          name,
          ...(scope.agentId && { agent_id: scope.agentId }),
          from: new Date(from).toISOString(),
          to: new Date(to).toISOString(),
          step_ms: step,
          buckets,
        };
      },
    );

    api.get(
      "/api/v1/metrics/latest",
      {
        onRequest: app.authenticate,
        schema: {
          summary: "The latest value of every series, by agent and name",
          tags,
          querystring: z.object({
            agent_id: agentId.optional(),
            limit: pageLimit(maxLimit),
            cursor: cursorParam.optional(),
          }),
          response: { 200: page(latestRow), ...errorReplies },
        },
      },
      async (request, reply) => {
        const q = request.query;
        const scope = readScope(request.principal, q.agent_id);
        const after =
          q.cursor === undefined
            ? undefined
            : decodeCursor<LatestPosition>(
                q.cursor,
                (c) => AGENT_ID_PATTERN.test(String(c.agentId)) && METRIC_NAME_PATTERN.test(String(c.name)),
              );
        // Already JSON in the reply schema's shape: a string with a JSON content type is sent as it is.
        const body = jsonPageBody(await readings.latest(scope, q.limit, after));
        return reply.type("application/json").send(body as never);
      },
    );
  },
  { name: "query-routes", dependencies: ["auth", "openapi"] },
);
