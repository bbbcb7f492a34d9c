import type { FastifyInstance } from "fastify";
import fp from "fastify-plugin";
import type { ZodTypeProvider } from "fastify-type-provider-zod";
import { z } from "zod";
import { countByReason, isRejectionId, pageOf, type RejectionHistory } from "../../live/rejection-history.ts";
import { readScope } from "../access.ts";
import { ApiError } from "../errors.ts";
import { agentId, errorReplies, pageLimit, timestamp } from "../schemas.ts";

const rejection = z
  .object({
    id: z.string().describe("orders the refusals; `cursor` of the next page"),
    agent_id: z.string(),
    source: z.enum(["mqtt", "http"]),
    reason: z.string().describe("the refusal's name (docs/refusals.md)"),
    message: z.string(),
    count: z.int().describe("readings (or publishes) this refusal stands for"),
    topic: z.string().optional(),
    at: timestamp,
  })
  .meta({ id: "Rejection" });

/**
 * A tenant's recent refusals (REJECTION_HISTORY_MAX, REJECTION_HISTORY_HOURS), newest first, and
 * their counts by reason: what the console shows before the live ones.
 */
export const rejectionRoutes = fp(
  async (app: FastifyInstance, options: { history: RejectionHistory; maxLimit: number; windowHours: number }) => {
    const api = app.withTypeProvider<ZodTypeProvider>();
    api.get(
      "/api/v1/rejections",
      {
        onRequest: app.authenticate,
        schema: {
          summary: `The tenant's refusals of the last ${options.windowHours} h, newest first, a page at a time, with their counts by reason`,
          tags: ["metrics"],
          querystring: z.object({
            agent_id: agentId.optional(),
            limit: pageLimit(options.maxLimit),
            cursor: z.string().optional().describe("next_cursor of the previous page"),
          }),
          response: {
            200: z.object({
              items: z.array(rejection),
              next_cursor: z.string().nullable(),
              counts: z
                .array(z.object({ reason: z.string(), count: z.int() }))
                .describe("every refusal kept now, by reason, most first (not only this page's)"),
              window_hours: z.int().describe("how long a refusal is kept (REJECTION_HISTORY_HOURS)"),
            }),
            ...errorReplies,
          },
        },
      },
      async (request) => {
        const { limit, cursor } = request.query;
        if (cursor !== undefined && !isRejectionId(cursor)) {
          throw new ApiError("bad_request", "cursor must be the next_cursor of a previous page");
        }
        const scope = readScope(request.principal, request.query.agent_id);
        // At most REJECTION_HISTORY_MAX are kept: one read gives the page and the counts.
        const recent = await options.history.recent(scope.tenantId);
        const page = pageOf(recent, { limit, before: cursor, agentId: scope.agentId });
        const counts = countByReason(
          scope.agentId === undefined ? recent : recent.filter((r) => r.agent_id === scope.agentId),
        );
        return { items: page.items, next_cursor: page.next ?? null, counts, window_hours: options.windowHours };
      },
    );
  },
  { name: "rejection-routes", dependencies: ["auth", "openapi"] },
);
