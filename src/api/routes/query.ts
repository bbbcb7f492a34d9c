import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { Prisma, PrismaClient } from "../../generated/prisma/client.ts";
import { metricNameFilter, readScope } from "../access.ts";
import { ApiError } from "../errors.ts";

interface Cursor {
  ts: string;
  id: string;
}

const encodeCursor = (cursor: Cursor) => Buffer.from(JSON.stringify(cursor)).toString("base64url");

function decodeCursor(raw: string): Cursor {
  try {
    const cursor = JSON.parse(Buffer.from(raw, "base64url").toString("utf8")) as Cursor;
    if (Number.isFinite(Date.parse(cursor.ts)) && /^\d+$/.test(cursor.id)) return cursor;
  } catch {}
  throw new ApiError(400, "bad_request", "cursor is not one this API returned");
}

/** `from` / `to`: ISO-8601 or epoch milliseconds. */
function parseTime(name: string, raw: string | undefined): Date | undefined {
  if (raw === undefined) return undefined;
  const date = /^\d+$/.test(raw) ? new Date(Number(raw)) : new Date(raw);
  if (!Number.isFinite(date.getTime())) {
    throw new ApiError(400, "bad_request", `${name} must be ISO-8601 or epoch milliseconds`);
  }
  return date;
}

/** GET /api/v1/metrics: one tenant's metrics, newest first, paginated by an opaque cursor. */
export const queryRoutes = fp(
  async (app: FastifyInstance, options: { prisma: PrismaClient; maxLimit: number }) => {
    const { prisma, maxLimit } = options;

    app.get("/api/v1/metrics", { preHandler: app.authenticate }, async (request) => {
      const q = request.query as Record<string, string | undefined>;
      const scope = readScope(request.principal, q.agent_id);
      const name = metricNameFilter(q.name);
      const limit = q.limit === undefined ? Math.min(100, maxLimit) : Number(q.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > maxLimit) {
        throw new ApiError(400, "bad_request", `limit must be a whole number from 1 to ${maxLimit}`);
      }
      const from = parseTime("from", q.from);
      const to = parseTime("to", q.to);
      const cursor = q.cursor === undefined ? undefined : decodeCursor(q.cursor);

      const where: Prisma.MetricWhereInput = {
        tenantId: scope.tenantId,
        ...(scope.agentId !== undefined && { agentId: scope.agentId }),
        ...(name !== undefined && { name }),
        ts: { ...(from && { gte: from }), ...(to && { lt: to }) },
        ...(cursor && {
          OR: [{ ts: { lt: new Date(cursor.ts) } }, { ts: new Date(cursor.ts), id: { lt: BigInt(cursor.id) } }],
        }),
      };
      const rows = await prisma.metric.findMany({
        where,
        orderBy: [{ ts: "desc" }, { id: "desc" }],
        take: limit + 1,
      });
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return {
        items: page.map((row) => ({
          id: row.id.toString(),
          agent_id: row.agentId,
          name: row.name,
          value: row.value,
          ts: row.ts.toISOString(),
          dedupe_id: row.dedupeId,
          tags: row.tags,
          received_at: row.receivedAt.toISOString(),
          stored_at: row.storedAt.toISOString(),
        })),
        next_cursor:
          rows.length > limit && last ? encodeCursor({ ts: last.ts.toISOString(), id: last.id.toString() }) : null,
      };
    });
  },
  { name: "query-routes", dependencies: ["auth"] },
);
