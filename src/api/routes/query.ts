import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import { AGENT_ID_PATTERN, METRIC_NAME_PATTERN } from "../../ingest/payload.ts";
import { type MetricStore, SERIES_AGGREGATES, type SeriesAggregate } from "../../store/metrics.ts";
import { metricNameFilter, readScope } from "../access.ts";
import { ApiError } from "../errors.ts";

const badRequest = (message: string) => new ApiError(400, "bad_request", message);

/** An opaque cursor: the position of the last item of a page, as JSON in base64url. */
function encodeCursor(position: Record<string, string>): string {
  return Buffer.from(JSON.stringify(position)).toString("base64url");
}

function decodeCursor<T>(raw: string, valid: (position: Record<string, unknown>) => boolean): T {
  try {
    const position = JSON.parse(Buffer.from(raw, "base64url").toString("utf8")) as Record<string, unknown>;
    if (valid(position)) return position as T;
  } catch {}
  throw badRequest("cursor is not one this API returned");
}

/** `from` / `to`: ISO-8601 or epoch milliseconds. */
function parseTime(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const ms = /^\d+$/.test(raw) ? Number(raw) : Date.parse(raw);
  if (!Number.isFinite(ms)) throw badRequest(`${name} must be ISO-8601 or epoch milliseconds`);
  return ms;
}

const STEP_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `step`: a whole number of seconds, minutes, hours or days (`30s`, `1m`, `6h`, `1d`). */
function parseStep(raw: string | undefined): number {
  const match = /^([1-9]\d{0,6})([smhd])$/.exec(raw ?? "");
  if (!match) throw badRequest("step must be a whole number and a unit: s, m, h or d (e.g. 1m)");
  return Number(match[1]) * (STEP_UNITS[match[2] as string] as number);
}

function parseAggregates(raw: string | undefined): SeriesAggregate[] {
  const asked = (raw ?? "avg").split(",").filter(Boolean);
  const unknown = asked.filter((a) => !SERIES_AGGREGATES.includes(a as SeriesAggregate));
  if (asked.length === 0 || unknown.length > 0) {
    throw badRequest(`agg must be a comma-separated list of ${SERIES_AGGREGATES.join(", ")}`);
  }
  return [...new Set(asked)] as SeriesAggregate[];
}

/**
 * The read API, one tenant at a time: readings (newest first, paginated), a metric's aggregated
 * series in time buckets, and the latest value of every series.
 */
export const queryRoutes = fp(
  async (app: FastifyInstance, options: { metrics: MetricStore; maxLimit: number; maxSeriesPoints: number }) => {
    const { metrics, maxLimit } = options;
    const pageSize = (raw: string | undefined) => {
      const limit = raw === undefined ? Math.min(100, maxLimit) : Number(raw);
      if (!Number.isInteger(limit) || limit < 1 || limit > maxLimit) {
        throw badRequest(`limit must be a whole number from 1 to ${maxLimit}`);
      }
      return limit;
    };

    app.get("/api/v1/metrics", { preHandler: app.authenticate }, async (request) => {
      const q = request.query as Record<string, string | undefined>;
      const scope = readScope(request.principal, q.agent_id);
      const limit = pageSize(q.limit);
      const after =
        q.cursor === undefined
          ? undefined
          : decodeCursor<{ ts: string; id: string }>(
              q.cursor,
              (c) => typeof c.ts === "string" && Number.isFinite(Date.parse(c.ts)) && /^\d+$/.test(String(c.id)),
            );
      const rows = await metrics.query(
        { ...scope, name: metricNameFilter(q.name), from: parseTime("from", q.from), to: parseTime("to", q.to) },
        limit + 1,
        after,
      );
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return {
        items: page,
        next_cursor: rows.length > limit && last ? encodeCursor({ ts: last.ts, id: last.id }) : null,
      };
    });

    app.get("/api/v1/metrics/series", { preHandler: app.authenticate }, async (request) => {
      const q = request.query as Record<string, string | undefined>;
      const scope = readScope(request.principal, q.agent_id);
      const name = metricNameFilter(q.name);
      if (name === undefined) throw new ApiError(400, "bad_name", "name is required");
      const from = parseTime("from", q.from);
      const to = parseTime("to", q.to);
      if (from === undefined || to === undefined || to <= from) {
        throw badRequest("from and to are required, from before to");
      }
      const stepMs = parseStep(q.step);
      if ((to - from) / stepMs > options.maxSeriesPoints) {
        throw badRequest(`at most ${options.maxSeriesPoints} buckets: widen step or narrow from..to`);
      }
      const aggregates = parseAggregates(q.agg);
      const buckets = await metrics.series({ ...scope, name, from, to }, stepMs, aggregates);
      return { name, ...(scope.agentId && { agent_id: scope.agentId }), step_ms: stepMs, buckets };
    });

    app.get("/api/v1/metrics/latest", { preHandler: app.authenticate }, async (request) => {
      const q = request.query as Record<string, string | undefined>;
      const scope = readScope(request.principal, q.agent_id);
      const limit = pageSize(q.limit);
      const after =
        q.cursor === undefined
          ? undefined
          : decodeCursor<{ agentId: string; name: string }>(
              q.cursor,
              (c) => AGENT_ID_PATTERN.test(String(c.agentId)) && METRIC_NAME_PATTERN.test(String(c.name)),
            );
      const rows = await metrics.latest(scope, limit + 1, after);
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return {
        items: page,
        next_cursor: rows.length > limit && last ? encodeCursor({ agentId: last.agent_id, name: last.name }) : null,
      };
    });
  },
  { name: "query-routes", dependencies: ["auth"] },
);
